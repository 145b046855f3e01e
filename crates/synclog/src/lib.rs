//! csync-synclog: the sync_log of Cyrus IMAPd 3.6 (§6), the file through which
//! every change on a master reaches the rolling `sync_client`.
//!
//! csync processes and real Cyrus processes can share the same log files: records
//! are written byte for byte as Cyrus writes them, appended under the same fcntl
//! lock with the same rotation check, and read with Cyrus's reader rules.
//!
//! * [`SyncLogRecord`]: the record types of §6.2, [`SyncLogRecord::to_line`] and
//!   [`SyncLogRecord::parse_line`] (§6.3), [`parse_log`] for a whole file.
//! * [`SyncLog`]: appends record groups to every configured channel, from an
//!   imapd.conf ([`SyncLog::from_config`]), honouring `sync_log`,
//!   `sync_log_channels` and a replica's suppression (§6.1, §6.4).
//! * [`LogReader`]: takes a channel's log for processing (`log` → `log-run`), and
//!   [`read_file`] / [`read_from`] for `-f` (§6.4).
//! * [`coalesce`]: a log file's records as the [`Plan`] a rolling sync_client
//!   executes (§4.9), with [`mailbox_owner`] (§8.2).
//!
//! The `cyr_synclog` binary of this crate is Cyrus's tool of that name (§6.6).
#![forbid(unsafe_code)]

mod coalesce;
mod error;
mod lock;
mod reader;
mod record;
mod writer;

pub use coalesce::{
    DEFAULT_DELETED_PREFIX, Plan, SeenWork, SubscriptionWork, coalesce, mailbox_owner,
};
pub use csync_config::Channel;
pub use error::{ChannelFailure, SyncLogError};
pub use reader::{LogReader, LogRun, read_file, read_from};
pub use record::{
    LogContents, ParsedLine, RecordError, SkipReason, SkippedLine, SyncLogRecord, encode_records,
    parse_log, quote_arg,
};
pub use writer::{DEFAULT_UNSUPPRESSABLE, MAX_ATTEMPTS, SyncLog, append_locked, channel_log_path};

/// `deletedprefix` from the configuration, or [`DEFAULT_DELETED_PREFIX`].
pub fn deleted_prefix(config: &csync_config::Config) -> &str {
    config
        .string("deletedprefix")
        .unwrap_or(DEFAULT_DELETED_PREFIX)
}
