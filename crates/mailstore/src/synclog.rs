//! The store's changes go to the real sync_log through csync-synclog's writer, which
//! locks and rotates exactly as Cyrus does.

use csync_synclog::{SyncLog, SyncLogRecord};

use crate::txn::{ChangeLog, LogEntry};

impl From<&LogEntry> for SyncLogRecord {
    fn from(entry: &LogEntry) -> SyncLogRecord {
        match entry.clone() {
            LogEntry::User(u) => SyncLogRecord::user(u),
            LogEntry::Unuser(u) => SyncLogRecord::unuser(u),
            LogEntry::Meta(u) => SyncLogRecord::meta(u),
            LogEntry::Append(m) => SyncLogRecord::append(m),
            LogEntry::Mailbox(m) => SyncLogRecord::mailbox(m),
            LogEntry::DoubleMailbox(a, b) => SyncLogRecord::double_mailbox(a, b),
            LogEntry::Rename(a, b) => SyncLogRecord::rename(a, b),
            LogEntry::Unmailbox(m) => SyncLogRecord::unmailbox(m),
            LogEntry::Quota(r) => SyncLogRecord::quota(r),
            LogEntry::Annotation(m) => SyncLogRecord::annotation(m),
            LogEntry::Seen(u, id) => SyncLogRecord::seen(u, id),
            LogEntry::Sub(u, m) => SyncLogRecord::sub(u, m),
        }
    }
}

impl ChangeLog for SyncLog {
    fn append(&self, entries: &[LogEntry]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let records: Vec<SyncLogRecord> = entries.iter().map(SyncLogRecord::from).collect();
        SyncLog::append(self, &records).map_err(|e| Box::new(e) as _)
    }
}
