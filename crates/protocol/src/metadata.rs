//! Per-user and per-server metadata that travels beside mailboxes: quotas, seen state,
//! sieve scripts and mailbox-level annotations (spec §3.4.7–§3.4.11, §3.5).

use crate::encode::Encoder;
use crate::guid::Guid;
use crate::mailbox::{FieldResult, Fields};
use crate::value::Item;

/// Unlimited storage in the legacy `LIMIT` key (−1 as u32).
pub const QUOTA_UNLIMITED: u32 = u32::MAX;

/// A quota root (`APPLY QUOTA`, `* QUOTA`, spec §3.4.9, §8.11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    pub root: String,
    /// Legacy storage limit in KiB; [`QUOTA_UNLIMITED`] when unlimited.
    pub limit: u32,
    /// `STORAGE` in KiB, when limited.
    pub storage: Option<u32>,
    /// `MESSAGE` count, when limited.
    pub message: Option<u32>,
    /// `X-ANNOTATION-STORAGE` in KiB, when limited.
    pub annotation_storage: Option<u32>,
    /// `X-NUM-FOLDERS` count, when limited.
    pub num_folders: Option<u32>,
    pub modseq: Option<u64>,
}

impl Quota {
    /// Only `ROOT` is required; an absent `LIMIT` means unlimited.
    pub fn decode(item: Item<'_>) -> FieldResult<Quota> {
        let f = Fields::new(item)?;
        Ok(Quota {
            root: f.text("ROOT")?,
            limit: f.opt_num32("LIMIT")?.unwrap_or(QUOTA_UNLIMITED),
            storage: f.opt_num32("STORAGE")?,
            message: f.opt_num32("MESSAGE")?,
            annotation_storage: f.opt_num32("X-ANNOTATION-STORAGE")?,
            num_folders: f.opt_num32("X-NUM-FOLDERS")?,
            modseq: f.opt_num64("MODSEQ")?,
        })
    }

    pub fn encode(&self, enc: &mut Encoder) {
        enc.begin_kvlist();
        enc.key("ROOT").string(self.root.as_bytes());
        enc.key("LIMIT").num(u64::from(self.limit));
        let resources = [
            ("STORAGE", self.storage),
            ("MESSAGE", self.message),
            ("X-ANNOTATION-STORAGE", self.annotation_storage),
            ("X-NUM-FOLDERS", self.num_folders),
        ];
        for (key, value) in resources {
            if let Some(v) = value {
                enc.key(key).num(u64::from(v));
            }
        }
        if let Some(m) = self.modseq {
            enc.key("MODSEQ").num(m);
        }
        enc.end();
    }

    /// The effective storage limit in KiB: an explicit `STORAGE` overrides `LIMIT`.
    pub fn storage_limit(&self) -> Option<u32> {
        match self.storage {
            Some(s) => Some(s),
            None if self.limit != QUOTA_UNLIMITED => Some(self.limit),
            None => None,
        }
    }
}

/// A user's seen state for a mailbox it does not own (spec §3.4.7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeenRecord {
    pub uniqueid: String,
    pub lastread: u64,
    pub lastuid: u32,
    pub lastchange: u64,
    /// An IMAP sequence set (`1:5,7`).
    pub seenuids: String,
}

impl SeenRecord {
    pub fn decode(item: Item<'_>) -> FieldResult<SeenRecord> {
        let f = Fields::new(item)?;
        Self::from_fields(&f)
    }

    fn from_fields(f: &Fields<'_>) -> FieldResult<SeenRecord> {
        Ok(SeenRecord {
            uniqueid: f.text("UNIQUEID")?,
            lastread: f.num64("LASTREAD")?,
            lastuid: f.num32("LASTUID")?,
            lastchange: f.num64("LASTCHANGE")?,
            seenuids: f.text("SEENUIDS")?,
        })
    }

    /// `APPLY SEEN`: the same keys after `USERID`; all required.
    pub fn decode_with_user(item: Item<'_>) -> FieldResult<(String, SeenRecord)> {
        let f = Fields::new(item)?;
        Ok((f.text("USERID")?, Self::from_fields(&f)?))
    }

    /// `* SEEN` form (no USERID) when `userid` is `None`.
    pub fn encode(&self, userid: Option<&str>, enc: &mut Encoder) {
        enc.begin_kvlist();
        if let Some(u) = userid {
            enc.key("USERID").string(u.as_bytes());
        }
        enc.key("UNIQUEID").string(self.uniqueid.as_bytes());
        enc.key("LASTREAD").num(self.lastread);
        enc.key("LASTUID").num(u64::from(self.lastuid));
        enc.key("LASTCHANGE").num(self.lastchange);
        enc.key("SEENUIDS").string(self.seenuids.as_bytes());
        enc.end();
    }
}

/// One entry of a user's sieve listing (`* SIEVE` in `GET USER`/`GET META`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SieveEntry {
    /// `<name>.script`, or `<name>.bc` for the entry that marks the active script.
    pub filename: String,
    pub last_update: u64,
    pub guid: Option<Guid>,
    pub is_active: Option<bool>,
}

impl SieveEntry {
    pub fn decode(item: Item<'_>) -> FieldResult<SieveEntry> {
        let f = Fields::new(item)?;
        Ok(SieveEntry {
            filename: f.text("FILENAME")?,
            last_update: f.num64("LAST_UPDATE")?,
            guid: f.opt("GUID").map(|_| f.guid("GUID")).transpose()?,
            is_active: f.opt_num32("ISACTIVE")?.map(|v| v != 0),
        })
    }

    pub fn encode(&self, enc: &mut Encoder) {
        enc.begin_kvlist();
        enc.key("FILENAME").string(self.filename.as_bytes());
        enc.key("LAST_UPDATE").num(self.last_update);
        if let Some(g) = &self.guid {
            enc.key("GUID").guid(g);
        }
        if let Some(a) = self.is_active {
            enc.key("ISACTIVE").num(u64::from(a));
        }
        enc.end();
    }
}

/// A sieve script with its content: `APPLY SIEVE` (with `LAST_UPDATE`) and the
/// `* SIEVE` reply of `GET FETCH_SIEVE` (without it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SieveScript {
    pub userid: String,
    pub filename: String,
    pub last_update: Option<u64>,
    pub content: Vec<u8>,
}

impl SieveScript {
    pub fn decode(item: Item<'_>) -> FieldResult<SieveScript> {
        let f = Fields::new(item)?;
        Ok(SieveScript {
            userid: f.text("USERID")?,
            filename: f.text("FILENAME")?,
            last_update: f.opt_num64("LAST_UPDATE")?,
            content: f.bytes("CONTENT")?,
        })
    }

    pub fn encode(&self, enc: &mut Encoder) {
        enc.begin_kvlist();
        enc.key("USERID").string(self.userid.as_bytes());
        enc.key("FILENAME").string(self.filename.as_bytes());
        if let Some(t) = self.last_update {
            enc.key("LAST_UPDATE").num(t);
        }
        enc.key("CONTENT").string(&self.content);
        enc.end();
    }
}

/// A mailbox-level (or, with `MBOXNAME ""`, server) annotation as `APPLY ANNOTATION`,
/// `APPLY UNANNOTATION` (no value) and `* ANNOTATION` carry it (spec §3.4.10).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct MailboxAnnotation {
    pub mboxname: String,
    pub entry: String,
    pub userid: String,
    pub value: Option<Vec<u8>>,
}

impl MailboxAnnotation {
    /// `value_required`: true for `APPLY ANNOTATION` and replies, false for UNANNOTATION.
    pub fn decode(item: Item<'_>, value_required: bool) -> FieldResult<MailboxAnnotation> {
        let f = Fields::new(item)?;
        Ok(MailboxAnnotation {
            mboxname: f.text("MBOXNAME")?,
            entry: f.text("ENTRY")?,
            userid: f.text("USERID")?,
            value: if value_required {
                Some(f.bytes("VALUE")?)
            } else {
                None
            },
        })
    }

    pub fn encode(&self, enc: &mut Encoder) {
        enc.begin_kvlist();
        enc.key("MBOXNAME").string(self.mboxname.as_bytes());
        enc.key("ENTRY").string(self.entry.as_bytes());
        enc.key("USERID").string(self.userid.as_bytes());
        if let Some(v) = &self.value {
            enc.key("VALUE").string(v);
        }
        enc.end();
    }
}
