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
    Type {
        key: &'static str,
        error: TypeError,
    },
    /// The value is not the container expected.
    #[error("{0}")]
    Shape(&'static str),
    /// Something that parses but breaks a protocol rule (Cyrus: `IMAP_PROTOCOL_ERROR`).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
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
