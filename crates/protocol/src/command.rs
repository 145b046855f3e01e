//! Typed commands: the session commands of spec §1.9 and every GET / APPLY / RESTORE
//! subcommand of §3. [`Command::parse`] turns a decoded line into a command or into the
//! exact reply Cyrus gives for that mistake; `encode` writes what a Cyrus client writes.

use crate::decode::{Body, Line};
use crate::encode::Encoder;
use crate::guid::Guid;
use crate::mailbox::{FieldError, FieldResult, Fields, MailboxState, Required, text_list};
use crate::metadata::{MailboxAnnotation, Quota, SeenRecord, SieveScript};
use crate::response::{SyncStatus, lines};
use crate::value::{Item, Kind, TypeError};

/// A command as the server receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `AUTHENTICATE <mech> [<initial-response>]`; the argument text is parsed by
    /// [`crate::sasl`].
    Authenticate {
        arguments: String,
    },
    StartTls,
    Compress {
        algorithm: String,
    },
    Noop,
    Restart,
    Exit,
    Get(GetCommand),
    Apply(ApplyCommand),
    Restore(RestoreCommand),
}

/// `GET` subcommands (spec §3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GetCommand {
    User(String),
    Mailboxes(Vec<String>),
    UniqueIds(Vec<String>),
    FullMailbox(String),
    Meta(String),
    Quota(String),
    Annotation(String),
    Fetch(FetchRequest),
    FetchSieve { userid: String, filename: String },
}

/// `GET FETCH %(MBOXNAME .. PARTITION .. UNIQUEID .. GUID .. UID ..)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    pub mboxname: String,
    pub partition: String,
    pub uniqueid: String,
    pub guid: Guid,
    pub uid: u32,
}

/// `APPLY RESERVE` (spec §3.4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserve {
    pub partition: String,
    pub mboxnames: Vec<String>,
    pub guids: Vec<Guid>,
}

/// One file of `APPLY MESSAGE`: the header; the bytes went to the decoder's sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageFile {
    pub partition: String,
    pub guid: Guid,
    pub size: u32,
    /// Ordinal of the file within the line (as the sink saw it).
    pub index: usize,
}

/// `APPLY RENAME` (spec §3.4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rename {
    pub old_mboxname: String,
    pub new_mboxname: String,
    pub partition: String,
    pub uidvalidity: Option<u32>,
}

/// `APPLY EXPUNGE` (spec §3.4.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expunge {
    pub mboxname: String,
    pub uniqueid: String,
    pub uids: Vec<u32>,
}

/// `APPLY` subcommands (spec §3.4). `local` marks the `LOCAL_` spellings, which mean
/// the same outside a Murder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyCommand {
    Reserve(Reserve),
    /// Non-file items (a `NIL` a sender wrote for a corrupt file) are dropped.
    Message(Vec<MessageFile>),
    Mailbox {
        local: bool,
        mailbox: Box<MailboxState>,
    },
    Unmailbox {
        local: bool,
        mboxname: String,
    },
    Rename {
        local: bool,
        rename: Rename,
    },
    Expunge(Expunge),
    Seen {
        userid: String,
        seen: SeenRecord,
    },
    Sub {
        userid: String,
        mboxname: String,
    },
    Unsub {
        userid: String,
        mboxname: String,
    },
    Quota(Quota),
    Unquota(String),
    Annotation(MailboxAnnotation),
    Unannotation(MailboxAnnotation),
    Sieve(SieveScript),
    Unsieve {
        userid: String,
        filename: String,
    },
    ActivateSieve {
        userid: String,
        filename: String,
    },
    UnactivateSieve {
        userid: String,
    },
    Unuser {
        local: bool,
        userid: String,
    },
    Force,
    Capabilities(Vec<String>),
}

/// `RESTORE` subcommands (spec §3.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreCommand {
    Mailbox {
        local: bool,
        mailbox: Box<MailboxState>,
    },
}

/// Why a line is not a command, with the reply Cyrus gives.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reply}")]
pub struct CommandError {
    /// The reply line, without CRLF.
    pub reply: String,
    /// Detail for logs (the reply is what Cyrus says, which is terse).
    pub detail: String,
}

impl CommandError {
    fn new(reply: impl Into<String>, detail: impl Into<String>) -> Self {
        CommandError {
            reply: reply.into(),
            detail: detail.into(),
        }
    }

    fn status(status: SyncStatus, detail: impl Into<String>) -> Self {
        CommandError::new(status.line(), detail)
    }

    fn field(err: FieldError) -> Self {
        CommandError::status(SyncStatus::from(&err), err.to_string())
    }
}

/// Parses a complete `APPLY MAILBOX` (or `APPLY LOCAL_MAILBOX`) line whose RECORD
/// items were streamed ([`crate::Decoder::stream_records`]): the same reply as
/// [`Command::parse`] for the whole line when something is wrong, otherwise the
/// description without its records (see [`MailboxState::decode_streamed`]).
/// `records` is the first error among the items, read with
/// [`crate::Record::decode_at`].
pub fn parse_streamed_mailbox(
    line: Line<'_>,
    records: Result<(), FieldError>,
) -> Result<MailboxState, CommandError> {
    let item = match line.body {
        Body::Dlist(item) => item,
        Body::Malformed(e) => {
            return Err(CommandError::new(
                lines::failed_to_parse("APPLY"),
                e.to_string(),
            ));
        }
        _ => {
            return Err(CommandError::new(
                lines::failed_to_parse("APPLY"),
                "missing argument",
            ));
        }
    };
    let name = subcommand(item);
    if !matches!(name.as_str(), "MAILBOX" | "LOCAL_MAILBOX") {
        return Err(unknown_subcommand(&name));
    }
    MailboxState::decode_streamed(item, Required::Apply, records).map_err(CommandError::field)
}

/// True for the words that need an authenticated session (`GET`, `APPLY`,
/// `RESTORE`, any case): an unauthenticated client gets `NO Please authenticate first`.
pub fn needs_auth(word: &[u8]) -> bool {
    [&b"GET"[..], b"APPLY", b"RESTORE"]
        .iter()
        .any(|w| w.eq_ignore_ascii_case(word))
}

impl Command {
    /// Parses a line read in [`crate::Mode::Commands`].
    pub fn parse(line: Line<'_>) -> Result<Command, CommandError> {
        let word = String::from_utf8_lossy(line.word).to_ascii_uppercase();
        if word.is_empty() {
            return Err(CommandError::new(lines::NULL_COMMAND, "empty line"));
        }
        let text_arg = |body: Body<'_>| -> Option<String> {
            match body {
                Body::Text(t) if !t.is_empty() => Some(String::from_utf8_lossy(t).into_owned()),
                _ => None,
            }
        };
        let no_args = |body: Body<'_>, cmd: Command| match body {
            Body::None => Ok(cmd),
            _ => Err(CommandError::new(
                lines::extra_arguments(&word),
                "extra arguments",
            )),
        };
        match word.as_str() {
            "NOOP" => no_args(line.body, Command::Noop),
            "RESTART" => no_args(line.body, Command::Restart),
            "EXIT" => no_args(line.body, Command::Exit),
            "STARTTLS" => no_args(line.body, Command::StartTls),
            "AUTHENTICATE" => match text_arg(line.body) {
                Some(arguments) => Ok(Command::Authenticate { arguments }),
                None => Err(CommandError::new(
                    lines::missing_argument(&word),
                    "AUTHENTICATE needs a mechanism",
                )),
            },
            "COMPRESS" => match text_arg(line.body) {
                Some(algorithm) => Ok(Command::Compress { algorithm }),
                None => Err(CommandError::new(
                    lines::missing_argument(&word),
                    "COMPRESS needs an algorithm",
                )),
            },
            "GET" | "APPLY" | "RESTORE" => {
                let item = match line.body {
                    Body::Dlist(item) => item,
                    Body::Malformed(e) => {
                        return Err(CommandError::new(
                            lines::failed_to_parse(&word),
                            e.to_string(),
                        ));
                    }
                    _ => {
                        return Err(CommandError::new(
                            lines::failed_to_parse(&word),
                            "missing argument",
                        ));
                    }
                };
                match word.as_str() {
                    "GET" => GetCommand::decode(item).map(Command::Get),
                    "APPLY" => ApplyCommand::decode(item).map(Command::Apply),
                    _ => RestoreCommand::decode(item).map(Command::Restore),
                }
            }
            _ => Err(CommandError::new(lines::UNRECOGNIZED, word)),
        }
    }

    /// Writes the command line as a Cyrus client does (with `{n+}` literals when the
    /// encoder is in client style). `APPLY MESSAGE` is written with
    /// [`encode_apply_message_start`] and friends instead, to stream bodies.
    pub fn encode(&self, enc: &mut Encoder) {
        match self {
            Command::Authenticate { arguments } => {
                enc.word("AUTHENTICATE").text(arguments.as_bytes());
            }
            Command::StartTls => {
                enc.word("STARTTLS");
            }
            Command::Compress { algorithm } => {
                enc.word("COMPRESS").text(algorithm.as_bytes());
            }
            Command::Noop => {
                enc.word("NOOP");
            }
            Command::Restart => {
                enc.word("RESTART");
            }
            Command::Exit => {
                enc.word("EXIT");
            }
            Command::Get(get) => {
                enc.word("GET");
                get.encode(enc);
            }
            Command::Apply(apply) => {
                enc.word("APPLY");
                apply.encode(enc);
            }
            Command::Restore(RestoreCommand::Mailbox { local, mailbox }) => {
                enc.word("RESTORE")
                    .key(if *local { "LOCAL_MAILBOX" } else { "MAILBOX" });
                mailbox.encode(enc);
            }
        }
        enc.end_line();
    }
}

fn text(key: &'static str, item: Item<'_>) -> FieldResult<String> {
    item.text()
        .map(str::to_owned)
        .map_err(|error| FieldError::Type { key, error })
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

fn subcommand(item: Item<'_>) -> String {
    String::from_utf8_lossy(item.key().unwrap_or_default()).to_ascii_uppercase()
}

fn unknown_subcommand(name: &str) -> CommandError {
    CommandError::status(
        SyncStatus::ProtocolError,
        format!("unknown subcommand {name}"),
    )
}

impl GetCommand {
    /// The subcommand name is matched case-insensitively, as Cyrus upper-cases it.
    pub fn decode(item: Item<'_>) -> Result<GetCommand, CommandError> {
        let name = subcommand(item);
        let parsed = match name.as_str() {
            "USER" => text("USER", item).map(GetCommand::User),
            "MAILBOXES" => text_list("MAILBOXES", item).map(GetCommand::Mailboxes),
            "UNIQUEIDS" => text_list("UNIQUEIDS", item).map(GetCommand::UniqueIds),
            "FULLMAILBOX" => text("FULLMAILBOX", item).map(GetCommand::FullMailbox),
            "META" => text("META", item).map(GetCommand::Meta),
            "QUOTA" => text("QUOTA", item).map(GetCommand::Quota),
            "ANNOTATION" => text("ANNOTATION", item).map(GetCommand::Annotation),
            "FETCH" => Fields::new(item).and_then(|f| {
                Ok(GetCommand::Fetch(FetchRequest {
                    mboxname: f.text("MBOXNAME")?,
                    partition: f.text("PARTITION")?,
                    uniqueid: f.text("UNIQUEID")?,
                    guid: f.guid("GUID")?,
                    uid: f.num32("UID")?,
                }))
            }),
            "FETCH_SIEVE" => Fields::new(item).and_then(|f| {
                Ok(GetCommand::FetchSieve {
                    userid: f.text("USERID")?,
                    filename: f.text("FILENAME")?,
                })
            }),
            _ => return Err(unknown_subcommand(&name)),
        };
        parsed.map_err(CommandError::field)
    }

    pub fn encode(&self, enc: &mut Encoder) {
        let list = |enc: &mut Encoder, key: &str, names: &[String]| {
            enc.key(key).begin_list();
            for n in names {
                enc.string(n.as_bytes());
            }
            enc.end();
        };
        match self {
            GetCommand::User(u) => {
                enc.key("USER").string(u.as_bytes());
            }
            GetCommand::Mailboxes(names) => list(enc, "MAILBOXES", names),
            GetCommand::UniqueIds(ids) => list(enc, "UNIQUEIDS", ids),
            GetCommand::FullMailbox(n) => {
                enc.key("FULLMAILBOX").string(n.as_bytes());
            }
            GetCommand::Meta(u) => {
                enc.key("META").string(u.as_bytes());
            }
            GetCommand::Quota(r) => {
                enc.key("QUOTA").string(r.as_bytes());
            }
            GetCommand::Annotation(n) => {
                enc.key("ANNOTATION").string(n.as_bytes());
            }
            GetCommand::Fetch(f) => {
                enc.key("FETCH").begin_kvlist();
                enc.key("MBOXNAME").string(f.mboxname.as_bytes());
                enc.key("PARTITION").string(f.partition.as_bytes());
                enc.key("UNIQUEID").string(f.uniqueid.as_bytes());
                enc.key("GUID").guid(&f.guid);
                enc.key("UID").num(u64::from(f.uid));
                enc.end();
            }
            GetCommand::FetchSieve { userid, filename } => {
                enc.key("FETCH_SIEVE").begin_kvlist();
                enc.key("USERID").string(userid.as_bytes());
                enc.key("FILENAME").string(filename.as_bytes());
                enc.end();
            }
        }
    }
}

impl ApplyCommand {
    pub fn decode(item: Item<'_>) -> Result<ApplyCommand, CommandError> {
        let name = subcommand(item);
        let (local, base) = match name.strip_prefix("LOCAL_") {
            Some(rest @ ("MAILBOX" | "UNMAILBOX" | "RENAME" | "UNUSER")) => (true, rest),
            _ => (false, name.as_str()),
        };
        let user_and = |key: &'static str| -> FieldResult<(String, String)> {
            let f = Fields::new(item)?;
            Ok((f.text("USERID")?, f.text(key)?))
        };
        let parsed: FieldResult<ApplyCommand> = match base {
            "RESERVE" => Fields::new(item).and_then(|f| {
                Ok(ApplyCommand::Reserve(Reserve {
                    partition: f.text("PARTITION")?,
                    mboxnames: f.text_list("MBOXNAME")?,
                    guids: guid_list("GUID", f.req("GUID")?)?,
                }))
            }),
            "MESSAGE" => decode_message_files(item).map(ApplyCommand::Message),
            "MAILBOX" => {
                MailboxState::decode(item, Required::Apply).map(|mailbox| ApplyCommand::Mailbox {
                    local,
                    mailbox: Box::new(mailbox),
                })
            }
            "UNMAILBOX" => {
                text("UNMAILBOX", item).map(|mboxname| ApplyCommand::Unmailbox { local, mboxname })
            }
            "RENAME" => Fields::new(item).and_then(|f| {
                Ok(ApplyCommand::Rename {
                    local,
                    rename: Rename {
                        old_mboxname: f.text("OLDMBOXNAME")?,
                        new_mboxname: f.text("NEWMBOXNAME")?,
                        partition: f.text("PARTITION")?,
                        uidvalidity: f.opt_num32("UIDVALIDITY")?,
                    },
                })
            }),
            "EXPUNGE" => Fields::new(item).and_then(|f| {
                let uids = f.req("UID")?;
                if uids.kind() != Kind::List {
                    return Err(FieldError::Type {
                        key: "UID",
                        error: TypeError::NotAList(uids.kind()),
                    });
                }
                Ok(ApplyCommand::Expunge(Expunge {
                    mboxname: f.text("MBOXNAME")?,
                    uniqueid: f.text("UNIQUEID")?,
                    uids: uids
                        .children()
                        .map(|u| {
                            u.num32()
                                .map_err(|error| FieldError::Type { key: "UID", error })
                        })
                        .collect::<FieldResult<_>>()?,
                }))
            }),
            "SEEN" => SeenRecord::decode_with_user(item)
                .map(|(userid, seen)| ApplyCommand::Seen { userid, seen }),
            "SUB" => user_and("MBOXNAME")
                .map(|(userid, mboxname)| ApplyCommand::Sub { userid, mboxname }),
            "UNSUB" => user_and("MBOXNAME")
                .map(|(userid, mboxname)| ApplyCommand::Unsub { userid, mboxname }),
            "QUOTA" => Quota::decode(item).map(ApplyCommand::Quota),
            "UNQUOTA" => text("UNQUOTA", item).map(ApplyCommand::Unquota),
            "ANNOTATION" => MailboxAnnotation::decode(item, true).map(ApplyCommand::Annotation),
            "UNANNOTATION" => {
                MailboxAnnotation::decode(item, false).map(ApplyCommand::Unannotation)
            }
            "SIEVE" => Fields::new(item).and_then(|f| {
                Ok(ApplyCommand::Sieve(SieveScript {
                    userid: f.text("USERID")?,
                    filename: f.text("FILENAME")?,
                    last_update: Some(f.num64("LAST_UPDATE")?),
                    content: f.bytes("CONTENT")?,
                }))
            }),
            "UNSIEVE" => user_and("FILENAME")
                .map(|(userid, filename)| ApplyCommand::Unsieve { userid, filename }),
            "ACTIVATE_SIEVE" => user_and("FILENAME")
                .map(|(userid, filename)| ApplyCommand::ActivateSieve { userid, filename }),
            "UNACTIVATE_SIEVE" => Fields::new(item)
                .and_then(|f| f.text("USERID"))
                .map(|userid| ApplyCommand::UnactivateSieve { userid }),
            "UNUSER" => text("UNUSER", item).map(|userid| ApplyCommand::Unuser { local, userid }),
            // The value is ignored (Cyrus sends an empty kvlist).
            "FORCE" => Ok(ApplyCommand::Force),
            "CAPABILITIES" => text_list("CAPABILITIES", item).map(ApplyCommand::Capabilities),
            _ => return Err(unknown_subcommand(&name)),
        };
        parsed.map_err(CommandError::field)
    }

    pub fn encode(&self, enc: &mut Encoder) {
        let local_key = |local: bool, key: &str| -> String {
            if local {
                format!("LOCAL_{key}")
            } else {
                key.to_owned()
            }
        };
        match self {
            ApplyCommand::Reserve(r) => {
                enc.key("RESERVE").begin_kvlist();
                enc.key("PARTITION").string(r.partition.as_bytes());
                enc.key("MBOXNAME").begin_list();
                for n in &r.mboxnames {
                    enc.string(n.as_bytes());
                }
                enc.end();
                enc.key("GUID").begin_list();
                for g in &r.guids {
                    enc.guid(g);
                }
                enc.end().end();
            }
            ApplyCommand::Message(files) => {
                // Headers only: a body-less encoding for tests and logs; real senders
                // stream with `encode_apply_message_start` and `Encoder::file_header`.
                enc.key("MESSAGE").begin_list();
                for f in files {
                    enc.file_header(f.partition.as_bytes(), &f.guid, f.size);
                }
                enc.end();
            }
            ApplyCommand::Mailbox { local, mailbox } => {
                enc.key(&local_key(*local, "MAILBOX"));
                if mailbox.is_placeholder() {
                    mailbox.encode_placeholder(enc);
                } else {
                    mailbox.encode(enc);
                }
            }
            ApplyCommand::Unmailbox { local, mboxname } => {
                enc.key(&local_key(*local, "UNMAILBOX"))
                    .string(mboxname.as_bytes());
            }
            ApplyCommand::Rename { local, rename } => {
                enc.key(&local_key(*local, "RENAME")).begin_kvlist();
                enc.key("OLDMBOXNAME")
                    .string(rename.old_mboxname.as_bytes());
                enc.key("NEWMBOXNAME")
                    .string(rename.new_mboxname.as_bytes());
                enc.key("PARTITION").string(rename.partition.as_bytes());
                if let Some(v) = rename.uidvalidity {
                    enc.key("UIDVALIDITY").num(u64::from(v));
                }
                enc.end();
            }
            ApplyCommand::Expunge(e) => {
                enc.key("EXPUNGE").begin_kvlist();
                enc.key("MBOXNAME").string(e.mboxname.as_bytes());
                enc.key("UNIQUEID").string(e.uniqueid.as_bytes());
                enc.key("UID").begin_list();
                for uid in &e.uids {
                    enc.num(u64::from(*uid));
                }
                enc.end().end();
            }
            ApplyCommand::Seen { userid, seen } => {
                enc.key("SEEN");
                seen.encode(Some(userid), enc);
            }
            ApplyCommand::Sub { userid, mboxname } | ApplyCommand::Unsub { userid, mboxname } => {
                let key = if matches!(self, ApplyCommand::Sub { .. }) {
                    "SUB"
                } else {
                    "UNSUB"
                };
                enc.key(key).begin_kvlist();
                enc.key("USERID").string(userid.as_bytes());
                enc.key("MBOXNAME").string(mboxname.as_bytes());
                enc.end();
            }
            ApplyCommand::Quota(q) => {
                enc.key("QUOTA");
                q.encode(enc);
            }
            ApplyCommand::Unquota(root) => {
                enc.key("UNQUOTA").string(root.as_bytes());
            }
            ApplyCommand::Annotation(a) => {
                enc.key("ANNOTATION");
                a.encode(enc);
            }
            ApplyCommand::Unannotation(a) => {
                enc.key("UNANNOTATION");
                MailboxAnnotation {
                    value: None,
                    ..a.clone()
                }
                .encode(enc);
            }
            ApplyCommand::Sieve(s) => {
                enc.key("SIEVE");
                s.encode(enc);
            }
            ApplyCommand::Unsieve { userid, filename }
            | ApplyCommand::ActivateSieve { userid, filename } => {
                let key = if matches!(self, ApplyCommand::Unsieve { .. }) {
                    "UNSIEVE"
                } else {
                    "ACTIVATE_SIEVE"
                };
                enc.key(key).begin_kvlist();
                enc.key("USERID").string(userid.as_bytes());
                enc.key("FILENAME").string(filename.as_bytes());
                enc.end();
            }
            ApplyCommand::UnactivateSieve { userid } => {
                enc.key("UNACTIVATE_SIEVE").begin_kvlist();
                enc.key("USERID").string(userid.as_bytes());
                enc.end();
            }
            ApplyCommand::Unuser { local, userid } => {
                enc.key(&local_key(*local, "UNUSER"))
                    .string(userid.as_bytes());
            }
            ApplyCommand::Force => {
                enc.key("FORCE").begin_kvlist().end();
            }
            ApplyCommand::Capabilities(caps) => {
                enc.key("CAPABILITIES").begin_list();
                for c in caps {
                    enc.string(c.as_bytes());
                }
                enc.end();
            }
        }
    }
}

/// Starts `APPLY MESSAGE (`; follow with one [`Encoder::file_header`] plus the file's
/// bytes per message, then [`encode_apply_message_end`].
pub fn encode_apply_message_start(enc: &mut Encoder) {
    enc.word("APPLY").key("MESSAGE").begin_list();
}

/// Ends `APPLY MESSAGE (...)` with `)` CRLF.
pub fn encode_apply_message_end(enc: &mut Encoder) {
    enc.end().end_line();
}

fn decode_message_files(item: Item<'_>) -> FieldResult<Vec<MessageFile>> {
    if item.kind() != Kind::List {
        return Err(FieldError::Type {
            key: "MESSAGE",
            error: TypeError::NotAList(item.kind()),
        });
    }
    let mut files = Vec::with_capacity(item.len());
    for child in item.children() {
        let Some(file) = child.file() else {
            continue;
        };
        files.push(MessageFile {
            partition: String::from_utf8(file.partition.to_vec()).map_err(|_| {
                FieldError::Type {
                    key: "MESSAGE",
                    error: TypeError::NotUtf8,
                }
            })?,
            guid: Guid::parse(file.guid).map_err(|error| FieldError::Type {
                key: "MESSAGE",
                error,
            })?,
            size: file.size,
            index: file.index,
        });
    }
    Ok(files)
}

impl RestoreCommand {
    pub fn decode(item: Item<'_>) -> Result<RestoreCommand, CommandError> {
        let name = subcommand(item);
        let local = match name.as_str() {
            "MAILBOX" => false,
            "LOCAL_MAILBOX" => true,
            _ => return Err(unknown_subcommand(&name)),
        };
        MailboxState::decode(item, Required::Restore)
            .map(|mailbox| RestoreCommand::Mailbox {
                local,
                mailbox: Box::new(mailbox),
            })
            .map_err(CommandError::field)
    }
}

#[cfg(test)]
mod tests;
