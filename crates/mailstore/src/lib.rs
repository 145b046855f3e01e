//! csync-mailstore: a Cyrus-style mailstore that keeps everything a Cyrus 3.6 master
//! replicates, durably and exactly.
//!
//! Messages are `<uid>.` files in per-mailbox directories of configured partitions
//! (`<partition>/uuid/<u0>/<u1>/<uniqueid>/`, as Cyrus 3.6 lays them out); everything
//! else (mailbox list, index records, flags, modseqs, annotations, seen state,
//! subscriptions, quotas, sieve scripts) lives in one SQLite index per store
//! (`<configdirectory>/csync.db`, WAL, `synchronous=FULL`).
//!
//! Every change goes through [`Store::write`]: a transaction that writes message files
//! first, fsyncs them and their directories, commits the index, and only then appends
//! the sync_log records for what changed. A crash at any point leaves either all of a
//! transaction or none of it; files written by an interrupted transaction sit above the
//! mailbox's `last_uid`, are never referenced, and are swept by `verify --repair` or
//! overwritten when that uid is allocated.
//!
//! * [`names`]: internal/external names, owners, validation (no path can escape)
//! * [`store`]: opening, reading (streamed record iteration)
//! * [`txn`]: the write transaction used by the replica and by local changes
//! * [`local`]: changes as Cyrus's imapd/lmtpd make them on a master (modseqs, uids,
//!   CRCs, sync_log records)
//! * [`verify`]: recompute GUIDs and CRCs, check index against files, repair
#![forbid(unsafe_code)]

pub mod config;
pub mod files;
pub mod local;
pub mod names;
mod schema;
pub mod store;
mod synclog;
pub mod txn;
pub mod verify;

pub use config::{DeleteMode, ExpungeMode, ImapdError, StoreConfig};
pub use names::Namespace;
pub use store::{Mailbox, MessageRecord, Store};
pub use txn::{FileSource, LogEntry, Txn};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bad name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("unknown partition {0:?} (no partition-{0} in the configuration)")]
    UnknownPartition(String),
    #[error("mailbox {0} does not exist")]
    NoSuchMailbox(String),
    #[error("mailbox {0} already exists")]
    MailboxExists(String),
    #[error("user {0} does not exist")]
    NoSuchUser(String),
    #[error("message {guid} does not match its bytes (computed {computed})")]
    GuidMismatch { guid: String, computed: String },
    #[error("message uid {uid} not found in {mailbox}")]
    NoSuchMessage { mailbox: String, uid: u32 },
    #[error("{0}")]
    Invalid(String),
    #[error("index is corrupt: {0}")]
    Corrupt(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("sync_log: {0}")]
    SyncLog(String),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the error is a full disk or quota on the filesystem.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if source.raw_os_error() == Some(28))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
