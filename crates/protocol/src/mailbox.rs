//! The MAILBOX description, its RECORD items and ANNOTATIONS (spec §3.3).
//!
//! One struct serves every place a mailbox travels: `APPLY MAILBOX` (client → server),
//! `* MAILBOX` data lines of `GET USER` / `GET MAILBOXES` / `GET FULLMAILBOX` and
//! `RESTORE MAILBOX`. Decoding never fails on unknown keys; which keys are required
//! depends on who reads (see [`Required`]). Encoding writes the keys in Cyrus's order.

use crate::encode::Encoder;
use crate::guid::Guid;
use crate::value::{Item, Kind, TypeError};

/// Why a typed value could not be read from a dlist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A required key is absent (Cyrus: `IMAP_PROTOCOL_BAD_PARAMETERS`).
    #[error("missing required key {0}")]
    Missing(&'static str),
    /// A key is present but does not read as its type (also BAD_PARAMETERS in Cyrus).
    #[error("key {key}: {error}")]
    Type { key: &'static str, error: TypeError },
    /// The value is not the container expected.
    #[error("{0}")]
    Shape(&'static str),
    /// Something that parses but breaks a protocol rule (Cyrus: `IMAP_PROTOCOL_ERROR`).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A RECORD item that does not parse (Cyrus: `IMAP_PROTOCOL_ERROR`).
    #[error("RECORD item {index}: {reason}")]
    BadRecord { index: usize, reason: String },
}

pub(crate) type FieldResult<T> = Result<T, FieldError>;

/// Typed access to a kvlist's fields with Cyrus's required/optional rules.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields<'a> {
    item: Item<'a>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(item: Item<'a>) -> FieldResult<Self> {
        if item.kind() != Kind::KvList {
            return Err(FieldError::Shape("expected a kvlist"));
        }
        Ok(Fields { item })
    }

    /// Looks up several keys in one pass over the kvlist (first match wins, as in
    /// Cyrus); the hot path for RECORD items.
    pub(crate) fn pick<const N: usize>(&self, keys: [&'static str; N]) -> [Option<Item<'a>>; N] {
        let mut found = [None; N];
        for child in self.item.children() {
            let Some(key) = child.key() else { continue };
            if let Some(i) = keys.iter().position(|k| k.as_bytes() == key)
                && found[i].is_none()
            {
                found[i] = Some(child);
            }
        }
        found
    }

    pub(crate) fn opt(&self, key: &'static str) -> Option<Item<'a>> {
        self.item.get(key)
    }

    pub(crate) fn req(&self, key: &'static str) -> FieldResult<Item<'a>> {
        self.opt(key).ok_or(FieldError::Missing(key))
    }

    fn typed<T>(
        key: &'static str,
        item: Item<'a>,
        f: impl FnOnce(&Item<'a>) -> Result<T, TypeError>,
    ) -> FieldResult<T> {
        f(&item).map_err(|error| FieldError::Type { key, error })
    }

    pub(crate) fn num64(&self, key: &'static str) -> FieldResult<u64> {
        Self::typed(key, self.req(key)?, |i| i.num64())
    }

    pub(crate) fn num32(&self, key: &'static str) -> FieldResult<u32> {
        Self::typed(key, self.req(key)?, |i| i.num32())
    }

    pub(crate) fn opt_num64(&self, key: &'static str) -> FieldResult<Option<u64>> {
        self.opt(key)
            .map(|i| Self::typed(key, i, |i| i.num64()))
            .transpose()
    }

    pub(crate) fn opt_num32(&self, key: &'static str) -> FieldResult<Option<u32>> {
        self.opt(key)
            .map(|i| Self::typed(key, i, |i| i.num32()))
            .transpose()
    }

    pub(crate) fn text(&self, key: &'static str) -> FieldResult<String> {
        Self::typed(key, self.req(key)?, |i| i.text().map(str::to_owned))
    }

    pub(crate) fn opt_text(&self, key: &'static str) -> FieldResult<Option<String>> {
        self.opt(key)
            .map(|i| Self::typed(key, i, |i| i.text().map(str::to_owned)))
            .transpose()
    }

    /// A map/buf value: any bytes, NUL allowed.
    pub(crate) fn bytes(&self, key: &'static str) -> FieldResult<Vec<u8>> {
        Self::typed(key, self.req(key)?, |i| {
            if i.is_nil() {
                Ok(Vec::new())
            } else {
                i.string().map(<[u8]>::to_vec)
            }
        })
    }

    pub(crate) fn guid(&self, key: &'static str) -> FieldResult<Guid> {
        Self::typed(key, self.req(key)?, |i| i.guid())
    }

    /// A list of strings (mailbox names, GUID texts, ...).
    pub(crate) fn text_list(&self, key: &'static str) -> FieldResult<Vec<String>> {
        let item = self.req(key)?;
        text_list(key, item)
    }
}

fn req<'a>(slot: Option<Item<'a>>, key: &'static str) -> FieldResult<Item<'a>> {
    slot.ok_or(FieldError::Missing(key))
}

pub(crate) fn text_list(key: &'static str, item: Item<'_>) -> FieldResult<Vec<String>> {
    if item.kind() != Kind::List {
        return Err(FieldError::Type {
            key,
            error: TypeError::NotAList(item.kind()),
        });
    }
    item.children()
        .map(|c| {
            c.text()
                .map(str::to_owned)
                .map_err(|error| FieldError::Type { key, error })
        })
        .collect()
}

/// System flags of a record, in Cyrus's wire order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SystemFlags(u8);

impl SystemFlags {
    pub const DELETED: SystemFlags = SystemFlags(1);
    pub const ANSWERED: SystemFlags = SystemFlags(2);
    pub const FLAGGED: SystemFlags = SystemFlags(4);
    pub const DRAFT: SystemFlags = SystemFlags(8);
    /// Pseudo-flag: expunged but still in the index.
    pub const EXPUNGED: SystemFlags = SystemFlags(16);
    pub const SEEN: SystemFlags = SystemFlags(32);

    /// Wire order and spelling (spec §3.3.1).
    pub const ALL: [(SystemFlags, &'static str); 6] = [
        (Self::DELETED, "\\Deleted"),
        (Self::ANSWERED, "\\Answered"),
        (Self::FLAGGED, "\\Flagged"),
        (Self::DRAFT, "\\Draft"),
        (Self::EXPUNGED, "\\Expunged"),
        (Self::SEEN, "\\Seen"),
    ];

    pub const fn empty() -> Self {
        SystemFlags(0)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn from_bits(bits: u8) -> Self {
        SystemFlags(bits & 63)
    }

    pub const fn contains(self, other: SystemFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: SystemFlags) {
        self.0 |= other.0;
    }

    pub fn remove(&mut self, other: SystemFlags) {
        self.0 &= !other.0;
    }

    /// Matches a system flag name case-insensitively (`\seen`, `\SEEN`).
    pub fn from_name(name: &[u8]) -> Option<SystemFlags> {
        Self::ALL
            .iter()
            .find(|(_, n)| n.as_bytes().eq_ignore_ascii_case(name))
            .map(|(f, _)| *f)
    }
}

impl std::ops::BitOr for SystemFlags {
    type Output = SystemFlags;
    fn bitor(self, rhs: SystemFlags) -> SystemFlags {
        SystemFlags(self.0 | rhs.0)
    }
}

/// One annotation: a mailbox-level one (spec §3.3.2) or a real per-message one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Annotation {
    /// Entry name, without `/shared` or `/private` (`/comment`).
    pub entry: String,
    /// `""` for the shared value, otherwise the owner of a private value.
    pub userid: String,
    pub modseq: u64,
    /// Any bytes, NUL allowed.
    pub value: Vec<u8>,
}

/// Names of the per-message virtual annotations Cyrus 3.6 synthesises (spec §3.3.2).
pub const ANNOT_THRID: &str = "/vendor/cmu/cyrus-imapd/thrid";
pub const ANNOT_SAVEDATE: &str = "/vendor/cmu/cyrus-imapd/savedate";
pub const ANNOT_CREATEDMODSEQ: &str = "/vendor/cmu/cyrus-imapd/createdmodseq";
pub const ANNOT_BASETHRID: &str = "/vendor/cmu/cyrus-imapd/basethrid";

/// One message record (spec §3.3.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub uid: u32,
    pub modseq: u64,
    pub last_updated: u64,
    pub system_flags: SystemFlags,
    /// User flags in the mailbox's flag-slot order, case preserved.
    pub user_flags: Vec<String>,
    pub internaldate: u64,
    pub size: u32,
    pub guid: Guid,
    /// Conversation id (`thrid` virtual annotation); 0 = none.
    pub thrid: u64,
    /// `savedate` virtual annotation; 0 = none.
    pub savedate: u64,
    /// `createdmodseq` virtual annotation; 0 = none.
    pub createdmodseq: u64,
    /// Real per-message annotations (the virtual ones above are not in this list).
    pub annotations: Vec<Annotation>,
}

impl Record {
    pub fn is_expunged(&self) -> bool {
        self.system_flags.contains(SystemFlags::EXPUNGED)
    }
}

/// `SINCE_MODSEQ`/`SINCE_CRC`/`SINCE_CRC_ANNOT`: the replica state a delta is based on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Since {
    pub modseq: u64,
    pub crc: u32,
    pub crc_annot: u32,
}

/// A mailbox description (spec §3.3). Optional keys that Cyrus omits when zero or
/// empty are zero or empty here, so a decoded value re-encodes identically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxState {
    pub uniqueid: String,
    /// Internal name (`user.john.Sent`).
    pub mboxname: String,
    /// Type letters (§8.7); `None` for plain e-mail.
    pub mboxtype: Option<String>,
    pub sync_crc: u32,
    /// Omitted for intermediates and partial states.
    pub sync_crc_annot: Option<u32>,
    pub last_uid: u32,
    pub highestmodseq: u64,
    pub recentuid: u32,
    pub recenttime: u64,
    pub last_appenddate: u64,
    pub pop3_last_login: u64,
    pub pop3_show_after: u64,
    pub xconvmodseq: u64,
    pub raclmodseq: u64,
    pub uidvalidity: u32,
    pub partition: String,
    /// `identifier TAB rights TAB ...` (§8.8), kept verbatim.
    pub acl: String,
    pub options: String,
    pub quotaroot: Option<String>,
    pub createdmodseq: u64,
    pub foldermodseq: u64,
    /// Mailbox-level annotations; empty = key absent.
    pub annotations: Vec<Annotation>,
    pub since: Option<Since>,
    /// `RECORD (...)`; `None` = key absent (GET USER / GET MAILBOXES replies).
    pub records: Option<Vec<Record>>,
}

impl MailboxState {
    /// Intermediate (`i`) or tombstone (`d`) types carry only a mailbox-list entry.
    pub fn is_placeholder(&self) -> bool {
        self.mboxtype
            .as_deref()
            .is_some_and(|t| t.contains('i') || t.contains('d'))
    }
}

/// Which keys a reader insists on (spec §3.3 "Which keys a receiver requires").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Required {
    /// The server reading `APPLY MAILBOX`.
    Apply,
    /// The client reading `* MAILBOX` from `GET USER` / `GET MAILBOXES`.
    ListReply,
    /// The client reading `* MAILBOX` from `GET FULLMAILBOX`.
    FullReply,
    /// The server reading `RESTORE MAILBOX`: only `MBOXNAME`.
    Restore,
}

impl Annotation {
    /// Reads `%(ENTRY .. USERID .. MODSEQ .. VALUE ..)`; all four keys required.
    pub fn decode(item: Item<'_>) -> FieldResult<Annotation> {
        let f = Fields::new(item)?;
        Ok(Annotation {
            entry: f.text("ENTRY")?,
            userid: f.text("USERID")?,
            modseq: f.num64("MODSEQ")?,
            value: f.bytes("VALUE")?,
        })
    }

    pub fn encode(&self, enc: &mut Encoder) {
        enc.begin_kvlist();
        enc.key("ENTRY").string(self.entry.as_bytes());
        enc.key("USERID").string(self.userid.as_bytes());
        enc.key("MODSEQ").num(self.modseq);
        enc.key("VALUE").string(&self.value);
        enc.end();
    }
}

fn decode_annotation_list(item: Item<'_>) -> FieldResult<Vec<Annotation>> {
    if item.kind() != Kind::List {
        return Err(FieldError::Type {
            key: "ANNOTATIONS",
            error: TypeError::NotAList(item.kind()),
        });
    }
    item.children().map(Annotation::decode).collect()
}

/// Cyrus allows at most this many user flags per mailbox.
pub const MAX_USER_FLAGS: usize = 128;

impl Record {
    /// Reads one RECORD item; all of UID, MODSEQ, LAST_UPDATED, FLAGS, INTERNALDATE,
    /// SIZE and GUID are required. Virtual annotations land in their fields.
    pub fn decode(item: Item<'_>) -> FieldResult<Record> {
        const KEYS: [&str; 8] = [
            "UID",
            "MODSEQ",
            "LAST_UPDATED",
            "FLAGS",
            "INTERNALDATE",
            "SIZE",
            "GUID",
            "ANNOTATIONS",
        ];
        let f = Fields::new(item)?;
        let [
            uid,
            modseq,
            last_updated,
            flags,
            internaldate,
            size,
            guid,
            annotations,
        ] = f.pick(KEYS);
        let typed = |key: &'static str| move |error| FieldError::Type { key, error };
        let mut record = Record {
            uid: req(uid, "UID")?.num32().map_err(typed("UID"))?,
            modseq: req(modseq, "MODSEQ")?.num64().map_err(typed("MODSEQ"))?,
            last_updated: req(last_updated, "LAST_UPDATED")?
                .num64()
                .map_err(typed("LAST_UPDATED"))?,
            internaldate: req(internaldate, "INTERNALDATE")?
                .num64()
                .map_err(typed("INTERNALDATE"))?,
            size: req(size, "SIZE")?.num32().map_err(typed("SIZE"))?,
            guid: req(guid, "GUID")?.guid().map_err(typed("GUID"))?,
            ..Record::default()
        };
        let flags = req(flags, "FLAGS")?;
        if flags.kind() != Kind::List {
            return Err(FieldError::Type {
                key: "FLAGS",
                error: TypeError::NotAList(flags.kind()),
            });
        }
        for flag in flags.children() {
            let name = flag.string().map_err(|error| FieldError::Type {
                key: "FLAGS",
                error,
            })?;
            if name.first() == Some(&b'\\') {
                // Unknown system flags are ignored, as Cyrus does.
                if let Some(sys) = SystemFlags::from_name(name) {
                    record.system_flags.insert(sys);
                }
            } else {
                let name = std::str::from_utf8(name).map_err(|_| FieldError::Type {
                    key: "FLAGS",
                    error: TypeError::NotUtf8,
                })?;
                if record.user_flags.len() >= MAX_USER_FLAGS {
                    return Err(FieldError::Protocol("more than 128 user flags"));
                }
                record.user_flags.push(name.to_owned());
            }
        }
        if let Some(list) = annotations {
            if list.kind() != Kind::List {
                return Err(FieldError::Type {
                    key: "ANNOTATIONS",
                    error: TypeError::NotAList(list.kind()),
                });
            }
            for item in list.children() {
                // Virtual annotations are read in place: they are on every record, and
                // allocating three strings each would dominate decoding a big mailbox.
                let a = Fields::new(item)?;
                let [entry, userid, modseq, value] = a.pick(["ENTRY", "USERID", "MODSEQ", "VALUE"]);
                let entry = req(entry, "ENTRY")?.string().map_err(typed("ENTRY"))?;
                let slot = match entry {
                    b"/vendor/cmu/cyrus-imapd/thrid" => Some((&mut record.thrid, true)),
                    b"/vendor/cmu/cyrus-imapd/savedate" => Some((&mut record.savedate, false)),
                    b"/vendor/cmu/cyrus-imapd/createdmodseq" => {
                        Some((&mut record.createdmodseq, false))
                    }
                    _ => None,
                };
                match slot {
                    Some((field, hex)) => {
                        req(userid, "USERID")?;
                        req(modseq, "MODSEQ")?.num64().map_err(typed("MODSEQ"))?;
                        let value = req(value, "VALUE")?;
                        *field = if hex { value.hex64() } else { value.num64() }
                            .map_err(typed("VALUE"))?;
                    }
                    // Accepted on input, never generated by 3.6 (spec §3.3.2).
                    None if entry == ANNOT_BASETHRID.as_bytes() => {}
                    None => record.annotations.push(Annotation::decode(item)?),
                }
            }
        }
        Ok(record)
    }

    /// Reads item `index` of a RECORD list: a failure is [`FieldError::BadRecord`],
    /// as [`MailboxState::decode`] reports it (Cyrus: `IMAP_PROTOCOL_ERROR`).
    pub fn decode_at(item: Item<'_>, index: usize) -> FieldResult<Record> {
        Record::decode(item).map_err(|e| FieldError::BadRecord {
            index,
            reason: e.to_string(),
        })
    }

    /// Writes the record as Cyrus does: system flags in fixed order, then user flags,
    /// real annotations, then the non-zero virtual ones (thrid, savedate,
    /// createdmodseq); `ANNOTATIONS` only when there is at least one.
    pub fn encode(&self, enc: &mut Encoder) {
        enc.begin_kvlist();
        enc.key("UID").num(u64::from(self.uid));
        enc.key("MODSEQ").num(self.modseq);
        enc.key("LAST_UPDATED").num(self.last_updated);
        enc.key("FLAGS").begin_list();
        for (flag, name) in SystemFlags::ALL {
            if self.system_flags.contains(flag) {
                enc.flag(name.as_bytes());
            }
        }
        for name in &self.user_flags {
            enc.flag(name.as_bytes());
        }
        enc.end();
        enc.key("INTERNALDATE").num(self.internaldate);
        enc.key("SIZE").num(u64::from(self.size));
        enc.key("GUID").guid(&self.guid);
        let has_virtual = self.thrid != 0 || self.savedate != 0 || self.createdmodseq != 0;
        if !self.annotations.is_empty() || has_virtual {
            enc.key("ANNOTATIONS").begin_list();
            for annot in &self.annotations {
                annot.encode(enc);
            }
            let mut virtual_annot = |entry: &str, write: &dyn Fn(&mut Encoder)| {
                enc.begin_kvlist();
                enc.key("ENTRY").string(entry.as_bytes());
                enc.key("USERID").string(b"");
                enc.key("MODSEQ").num(0);
                enc.key("VALUE");
                write(enc);
                enc.end();
            };
            if self.thrid != 0 {
                let thrid = self.thrid;
                virtual_annot(ANNOT_THRID, &|e| {
                    e.hex64(thrid);
                });
            }
            if self.savedate != 0 {
                let savedate = self.savedate;
                virtual_annot(ANNOT_SAVEDATE, &|e| {
                    e.num(savedate);
                });
            }
            if self.createdmodseq != 0 {
                let createdmodseq = self.createdmodseq;
                virtual_annot(ANNOT_CREATEDMODSEQ, &|e| {
                    e.num(createdmodseq);
                });
            }
            enc.end();
        }
        enc.end();
    }
}

impl MailboxState {
    /// Reads a mailbox description. Unknown keys are ignored; missing required keys
    /// give [`FieldError::Missing`] (Cyrus: `IMAP_PROTOCOL_BAD_PARAMETERS`); a bad
    /// record gives [`FieldError::Protocol`] (Cyrus: `IMAP_PROTOCOL_ERROR`).
    pub fn decode(item: Item<'_>, required: Required) -> FieldResult<MailboxState> {
        Self::decode_inner(item, required, None)
    }

    /// Reads a description whose `RECORD` items were handed out while the line was
    /// decoded ([`crate::Decoder::stream_records`]) and read by the caller with
    /// [`Record::decode_at`]: `records` is the first of their errors, or `Ok`. The
    /// result, and which error wins when several keys are bad, is what
    /// [`MailboxState::decode`] gives for the whole line, except that `records` is
    /// an empty list rather than the records. The `RECORD` list in `item` may still
    /// hold some items; they are not read again.
    pub fn decode_streamed(
        item: Item<'_>,
        required: Required,
        records: Result<(), FieldError>,
    ) -> FieldResult<MailboxState> {
        Self::decode_inner(item, required, Some(records))
    }

    fn decode_inner(
        item: Item<'_>,
        required: Required,
        streamed: Option<FieldResult<()>>,
    ) -> FieldResult<MailboxState> {
        let f = Fields::new(item)?;
        let mboxtype = f.opt_text("MBOXTYPE")?;
        let placeholder = mboxtype
            .as_deref()
            .is_some_and(|t| t.contains('i') || t.contains('d'));
        let need = |key: &'static str| -> bool {
            match required {
                Required::Apply => {
                    matches!(key, "UNIQUEID" | "MBOXNAME" | "HIGHESTMODSEQ")
                        || (!placeholder
                            && matches!(
                                key,
                                "PARTITION"
                                    | "LAST_UID"
                                    | "RECENTUID"
                                    | "RECENTTIME"
                                    | "LAST_APPENDDATE"
                                    | "POP3_LAST_LOGIN"
                                    | "UIDVALIDITY"
                                    | "ACL"
                                    | "OPTIONS"
                                    | "RECORD"
                            ))
                }
                Required::ListReply => matches!(
                    key,
                    "UNIQUEID"
                        | "MBOXNAME"
                        | "PARTITION"
                        | "ACL"
                        | "OPTIONS"
                        | "HIGHESTMODSEQ"
                        | "UIDVALIDITY"
                        | "LAST_UID"
                        | "RECENTUID"
                        | "RECENTTIME"
                        | "POP3_LAST_LOGIN"
                ),
                Required::FullReply => {
                    matches!(key, "HIGHESTMODSEQ" | "UIDVALIDITY" | "LAST_UID" | "RECORD")
                }
                Required::Restore => key == "MBOXNAME",
            }
        };
        let text = |key: &'static str| -> FieldResult<String> {
            if need(key) {
                f.text(key)
            } else {
                Ok(f.opt_text(key)?.unwrap_or_default())
            }
        };
        let num64 = |key: &'static str| -> FieldResult<u64> {
            if need(key) {
                f.num64(key)
            } else {
                Ok(f.opt_num64(key)?.unwrap_or(0))
            }
        };
        let num32 = |key: &'static str| -> FieldResult<u32> {
            if need(key) {
                f.num32(key)
            } else {
                Ok(f.opt_num32(key)?.unwrap_or(0))
            }
        };
        let since = match f.opt_num64("SINCE_MODSEQ")? {
            Some(modseq) => Some(Since {
                modseq,
                crc: f.opt_num32("SINCE_CRC")?.unwrap_or(0),
                crc_annot: f.opt_num32("SINCE_CRC_ANNOT")?.unwrap_or(0),
            }),
            None => None,
        };
        let annotations = match f.opt("ANNOTATIONS") {
            Some(list) => decode_annotation_list(list)?,
            None => Vec::new(),
        };
        let records = match f.opt("RECORD") {
            Some(list) => {
                if list.kind() != Kind::List {
                    return Err(FieldError::Type {
                        key: "RECORD",
                        error: TypeError::NotAList(list.kind()),
                    });
                }
                match streamed {
                    // Keys after RECORD are read below, as for a whole line, so their
                    // errors rank exactly as they would.
                    Some(outcome) => {
                        outcome?;
                        Some(Vec::new())
                    }
                    None => {
                        let mut records = Vec::with_capacity(list.len());
                        for (index, item) in list.children().enumerate() {
                            records.push(Record::decode_at(item, index)?);
                        }
                        Some(records)
                    }
                }
            }
            None if need("RECORD") => return Err(FieldError::Missing("RECORD")),
            None => None,
        };
        Ok(MailboxState {
            uniqueid: text("UNIQUEID")?,
            mboxname: text("MBOXNAME")?,
            mboxtype,
            sync_crc: num32("SYNC_CRC")?,
            sync_crc_annot: f.opt_num32("SYNC_CRC_ANNOT")?,
            last_uid: num32("LAST_UID")?,
            highestmodseq: num64("HIGHESTMODSEQ")?,
            recentuid: num32("RECENTUID")?,
            recenttime: num64("RECENTTIME")?,
            last_appenddate: num64("LAST_APPENDDATE")?,
            pop3_last_login: num64("POP3_LAST_LOGIN")?,
            pop3_show_after: num64("POP3_SHOW_AFTER")?,
            xconvmodseq: num64("XCONVMODSEQ")?,
            raclmodseq: num64("RACLMODSEQ")?,
            uidvalidity: num32("UIDVALIDITY")?,
            partition: text("PARTITION")?,
            acl: text("ACL")?,
            options: text("OPTIONS")?,
            quotaroot: f.opt_text("QUOTAROOT")?,
            createdmodseq: num64("CREATEDMODSEQ")?,
            foldermodseq: num64("FOLDERMODSEQ")?,
            annotations,
            since,
            records,
        })
    }

    /// Writes the full description in Cyrus's key order (`GET` replies and the
    /// client's `APPLY MAILBOX` of a real mailbox).
    pub fn encode(&self, enc: &mut Encoder) {
        enc.begin_kvlist();
        self.encode_fields(enc);
        if let Some(records) = &self.records {
            enc.key("RECORD").begin_list();
            for record in records {
                record.encode(enc);
            }
            enc.end();
        }
        enc.end();
    }

    /// The keys up to and including the `SINCE_*` ones, without the enclosing
    /// `%( )` and without `RECORD`: a sender that streams a large record list writes
    /// `%(`, these, `RECORD (`, each record, `))` itself.
    pub fn encode_fields(&self, enc: &mut Encoder) {
        enc.key("UNIQUEID").string(self.uniqueid.as_bytes());
        enc.key("MBOXNAME").string(self.mboxname.as_bytes());
        if let Some(t) = &self.mboxtype {
            enc.key("MBOXTYPE").string(t.as_bytes());
        }
        enc.key("SYNC_CRC").num(u64::from(self.sync_crc));
        if let Some(c) = self.sync_crc_annot {
            enc.key("SYNC_CRC_ANNOT").num(u64::from(c));
        }
        enc.key("LAST_UID").num(u64::from(self.last_uid));
        enc.key("HIGHESTMODSEQ").num(self.highestmodseq);
        enc.key("RECENTUID").num(u64::from(self.recentuid));
        enc.key("RECENTTIME").num(self.recenttime);
        enc.key("LAST_APPENDDATE").num(self.last_appenddate);
        enc.key("POP3_LAST_LOGIN").num(self.pop3_last_login);
        enc.key("POP3_SHOW_AFTER").num(self.pop3_show_after);
        if self.xconvmodseq != 0 {
            enc.key("XCONVMODSEQ").num(self.xconvmodseq);
        }
        if self.raclmodseq != 0 {
            enc.key("RACLMODSEQ").num(self.raclmodseq);
        }
        enc.key("UIDVALIDITY").num(u64::from(self.uidvalidity));
        enc.key("PARTITION").string(self.partition.as_bytes());
        enc.key("ACL").string(self.acl.as_bytes());
        enc.key("OPTIONS").string(self.options.as_bytes());
        if let Some(root) = &self.quotaroot {
            enc.key("QUOTAROOT").string(root.as_bytes());
        }
        if self.createdmodseq != 0 {
            enc.key("CREATEDMODSEQ").num(self.createdmodseq);
        }
        if self.foldermodseq != 0 {
            enc.key("FOLDERMODSEQ").num(self.foldermodseq);
        }
        if !self.annotations.is_empty() {
            enc.key("ANNOTATIONS").begin_list();
            for annot in &self.annotations {
                annot.encode(enc);
            }
            enc.end();
        }
        if let Some(since) = &self.since {
            enc.key("SINCE_MODSEQ").num(since.modseq);
            enc.key("SINCE_CRC").num(u64::from(since.crc));
            enc.key("SINCE_CRC_ANNOT").num(u64::from(since.crc_annot));
        }
    }

    /// The client's short form for an intermediate or tombstone (spec §4.5):
    /// `%(UNIQUEID .. MBOXNAME .. MBOXTYPE .. HIGHESTMODSEQ .. CREATEDMODSEQ .. FOLDERMODSEQ ..)`.
    pub fn encode_placeholder(&self, enc: &mut Encoder) {
        enc.begin_kvlist();
        enc.key("UNIQUEID").string(self.uniqueid.as_bytes());
        enc.key("MBOXNAME").string(self.mboxname.as_bytes());
        if let Some(t) = &self.mboxtype {
            enc.key("MBOXTYPE").string(t.as_bytes());
        }
        enc.key("HIGHESTMODSEQ").num(self.highestmodseq);
        enc.key("CREATEDMODSEQ").num(self.createdmodseq);
        enc.key("FOLDERMODSEQ").num(self.foldermodseq);
        enc.end();
    }
}
