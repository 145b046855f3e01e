//! The write transaction. Everything that changes the store happens inside one:
//!
//! 1. index rows change inside an SQLite `BEGIN IMMEDIATE` transaction (one writer at a
//!    time, across processes);
//! 2. message files are written (or hard-linked) to their final names as the
//!    transaction goes;
//! 3. at commit, every new file and every directory that gained an entry is fsynced,
//!    then the index commits (WAL, `synchronous=FULL`): the commit point;
//! 4. after the commit, files that the transaction removed are unlinked and the
//!    sync_log records are appended.
//!
//! A crash before 3 leaves files above the mailbox's `last_uid` that nothing refers to;
//! a crash between 3 and 4 leaves extra files (unlinked by `verify --repair`) and, at
//! worst, a missing sync_log record, which the next full sync (`-A`) covers, exactly
//! the window Cyrus has.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use csync_protocol::crc::SyncCrcs;
use csync_protocol::mailbox::{Annotation, MailboxState, Record};
use csync_protocol::metadata::{Quota, SeenRecord};
use rusqlite::{Connection, OptionalExtension, params};

use crate::config::StoreConfig;
use crate::files::{self, link_or_copy, mailbox_dir, message_path};
use crate::names::{validate_internal, validate_partition, validate_uniqueid, validate_userid};
use crate::store::{
    MAILBOX_COLUMNS, Mailbox, MessageRecord, RECORD_COLUMNS, mailbox_from_row, record_from_row,
    to_i64, to_u64,
};
use crate::{Result, StoreError};

/// One sync_log record (spec §6.2), as the store emits them after a commit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogEntry {
    User(String),
    Unuser(String),
    Meta(String),
    Append(String),
    Mailbox(String),
    DoubleMailbox(String, String),
    Rename(String, String),
    Unmailbox(String),
    Quota(String),
    Annotation(String),
    Seen(String, String),
    Sub(String, String),
}

/// Where sync_log records go once their change is durable.
pub trait ChangeLog: Send {
    fn append(
        &self,
        entries: &[LogEntry],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// Where the bytes of a record's message file come from.
pub enum FileSource<'a> {
    /// Keep the file the record already has (a flags-only change). For a record that
    /// is new to the mailbox this means "no file" and is only valid for expunged ones.
    Keep,
    /// A file already on disk whose SHA-1 the caller has checked (a staged upload, or
    /// the same message in another mailbox): hard-linked, or copied across filesystems.
    Link(&'a Path),
    /// Bytes to write; their SHA-1 and length must match the record's GUID and SIZE.
    Reader(Box<dyn Read + 'a>),
    /// The record has no file (an expunged record whose file was removed). An existing
    /// file is unlinked after the commit.
    Remove,
}

impl std::fmt::Debug for FileSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileSource::Keep => f.write_str("Keep"),
            FileSource::Link(p) => write!(f, "Link({})", p.display()),
            FileSource::Reader(_) => f.write_str("Reader"),
            FileSource::Remove => f.write_str("Remove"),
        }
    }
}

/// A write transaction; see the module documentation for its durability protocol.
pub struct Txn<'c> {
    tx: Option<rusqlite::Transaction<'c>>,
    config: &'c StoreConfig,
    crc_delta: BTreeMap<i64, SyncCrcs>,
    /// Message files this transaction created, fsynced at commit and removed on abort.
    /// Every one is `<dir>/<uid>.`, so it is kept as (index into `new_dirs`, uid):
    /// 8 bytes a file rather than a path, which keeps a 20,000-message apply from
    /// holding 20,000 paths.
    new_files: Vec<(u32, u32)>,
    /// Directories that gained entries, fsynced at commit after the files.
    new_dirs: Vec<PathBuf>,
    unlink_after: Vec<PathBuf>,
    rmdir_after: Vec<PathBuf>,
    log: Vec<LogEntry>,
}

impl std::fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn")
            .field("new_files", &self.new_files.len())
            .field("log", &self.log)
            .finish()
    }
}

pub(crate) fn load_record(
    conn: &Connection,
    mailbox: i64,
    uid: u32,
) -> Result<Option<MessageRecord>> {
    let sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE mailbox = ?1 AND uid = ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    let Some(mut rec) = stmt
        .query_row(params![mailbox, i64::from(uid)], record_from_row)
        .optional()?
    else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT entry, userid, modseq, value FROM record_annotations \
         WHERE mailbox = ?1 AND uid = ?2 ORDER BY entry, userid",
    )?;
    let rows = stmt.query_map(params![mailbox, i64::from(uid)], |r| {
        Ok(Annotation {
            entry: r.get(0)?,
            userid: r.get(1)?,
            modseq: to_u64(r.get(2)?),
            value: r.get(3)?,
        })
    })?;
    rec.record.annotations = rows.collect::<rusqlite::Result<_>>()?;
    Ok(Some(rec))
}

impl<'c> Txn<'c> {
    pub(crate) fn new(tx: rusqlite::Transaction<'c>, config: &'c StoreConfig) -> Self {
        Txn {
            tx: Some(tx),
            config,
            crc_delta: BTreeMap::new(),
            new_files: Vec::new(),
            new_dirs: Vec::new(),
            unlink_after: Vec::new(),
            rmdir_after: Vec::new(),
            log: Vec::new(),
        }
    }

    fn conn(&self) -> &Connection {
        // The transaction is only taken by commit/abort, which consume the Txn.
        self.tx
            .as_deref()
            .expect("transaction is open until commit or abort")
    }

    pub fn config(&self) -> &StoreConfig {
        self.config
    }

    /// Queues a sync_log record, written after the commit.
    pub fn log(&mut self, entry: LogEntry) {
        if !self.log.contains(&entry) {
            self.log.push(entry);
        }
    }

    fn with_pending_crc(&self, mut m: Mailbox) -> Result<Mailbox> {
        if let Some(delta) = self.crc_delta.get(&m.id) {
            m.state.sync_crc ^= delta.basic;
            if let Some(a) = &mut m.state.sync_crc_annot {
                *a ^= delta.annot;
            }
        }
        m.state.annotations = self.mailbox_annotations(m.id)?;
        Ok(m)
    }

    /// A mailbox-list entry by name, as of this transaction.
    pub fn mailbox(&self, name: &str) -> Result<Option<Mailbox>> {
        let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE name = ?1");
        match self
            .conn()
            .prepare_cached(&sql)?
            .query_row([name], mailbox_from_row)
            .optional()?
        {
            Some(m) => Ok(Some(self.with_pending_crc(m)?)),
            None => Ok(None),
        }
    }

    pub fn mailbox_by_id(&self, id: i64) -> Result<Mailbox> {
        let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = ?1");
        let m = self
            .conn()
            .prepare_cached(&sql)?
            .query_row([id], mailbox_from_row)?;
        self.with_pending_crc(m)
    }

    /// A live (non-tombstone) entry by uniqueid.
    pub fn mailbox_by_uniqueid(&self, uniqueid: &str) -> Result<Option<Mailbox>> {
        let sql = format!(
            "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE uniqueid = ?1 \
             AND instr(mbtype, 'd') = 0 ORDER BY id LIMIT 1"
        );
        match self
            .conn()
            .prepare_cached(&sql)?
            .query_row([uniqueid], mailbox_from_row)
            .optional()?
        {
            Some(m) => Ok(Some(self.with_pending_crc(m)?)),
            None => Ok(None),
        }
    }

    /// Creates a mailbox-list entry from a description: a real mailbox (with an empty
    /// index and the given header, CRCs of an empty mailbox) or a placeholder. A
    /// tombstone or intermediate of the same name is replaced; a real one is an error.
    pub fn create_mailbox(&mut self, state: &MailboxState) -> Result<Mailbox> {
        validate_internal(&state.mboxname)?;
        validate_uniqueid(&state.uniqueid)?;
        let placeholder = state.is_placeholder();
        if !placeholder {
            validate_partition(&state.partition)?;
            self.config.partition_root(&state.partition)?;
        }
        if let Some(existing) = self.mailbox(&state.mboxname)? {
            if existing.is_real() {
                return Err(StoreError::MailboxExists(state.mboxname.clone()));
            }
            self.conn()
                .execute("DELETE FROM mailboxes WHERE id = ?1", [existing.id])?;
            self.conn().execute(
                "DELETE FROM mailbox_annotations WHERE mailbox = ?1",
                [existing.id],
            )?;
        }
        let owner = self.config.namespace.owner(&state.mboxname);
        self.conn()
            .prepare_cached(
                "INSERT INTO mailboxes (name, uniqueid, owner, mbtype, partition, acl, options, \
             uidvalidity, last_uid, highestmodseq, recentuid, recenttime, last_appenddate, \
             pop3_last_login, pop3_show_after, xconvmodseq, raclmodseq, createdmodseq, \
             foldermodseq, quotaroot, sync_crc, sync_crc_annot) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, 0, 0, 0, 0, 0, ?10, ?11, ?12, ?13, \
             ?14, 0, ?15)",
            )?
            .execute(params![
                state.mboxname,
                state.uniqueid,
                owner,
                state.mboxtype.clone().unwrap_or_default(),
                state.partition,
                state.acl,
                state.options,
                i64::from(state.uidvalidity),
                to_i64(if placeholder { state.highestmodseq } else { 0 }),
                to_i64(state.xconvmodseq),
                to_i64(state.raclmodseq),
                to_i64(state.createdmodseq),
                to_i64(state.foldermodseq),
                state.quotaroot,
                i64::from(csync_protocol::crc::ANNOT_CRC_START),
            ])?;
        let id = self.conn().last_insert_rowid();
        if !placeholder {
            let root = self.config.partition_root(&state.partition)?;
            let dir = mailbox_dir(root, &state.uniqueid);
            files::create_dir_durable(&dir)?;
        }
        self.set_mailbox_annotations(id, &state.annotations)?;
        self.mailbox_by_id(id)
    }

    /// Writes a mailbox's header fields (everything in `state` except name, uniqueid,
    /// partition, records and the CRCs, which the transaction maintains itself).
    pub fn update_header(&mut self, m: &Mailbox) -> Result<()> {
        let s = &m.state;
        self.conn()
            .prepare_cached(
                "UPDATE mailboxes SET mbtype = ?2, acl = ?3, options = ?4, uidvalidity = ?5, \
             last_uid = ?6, highestmodseq = ?7, recentuid = ?8, recenttime = ?9, \
             last_appenddate = ?10, pop3_last_login = ?11, pop3_show_after = ?12, \
             xconvmodseq = ?13, raclmodseq = ?14, createdmodseq = ?15, foldermodseq = ?16, \
             deletedmodseq = ?17, quotaroot = ?18 WHERE id = ?1",
            )?
            .execute(params![
                m.id,
                s.mboxtype.clone().unwrap_or_default(),
                s.acl,
                s.options,
                i64::from(s.uidvalidity),
                i64::from(s.last_uid),
                to_i64(s.highestmodseq),
                i64::from(s.recentuid),
                to_i64(s.recenttime),
                to_i64(s.last_appenddate),
                to_i64(s.pop3_last_login),
                to_i64(s.pop3_show_after),
                to_i64(s.xconvmodseq),
                to_i64(s.raclmodseq),
                to_i64(s.createdmodseq),
                to_i64(s.foldermodseq),
                to_i64(m.deletedmodseq),
                s.quotaroot,
            ])?;
        Ok(())
    }

    /// Replaces all mailbox-level annotations of a mailbox (0 = server annotations).
    pub fn set_mailbox_annotations(&mut self, id: i64, annotations: &[Annotation]) -> Result<()> {
        self.conn()
            .prepare_cached("DELETE FROM mailbox_annotations WHERE mailbox = ?1")?
            .execute([id])?;
        for a in annotations {
            self.set_mailbox_annotation(id, &a.entry, &a.userid, Some((&a.value, a.modseq)))?;
        }
        Ok(())
    }

    /// Sets (or with `None`, removes) one mailbox-level annotation.
    pub fn set_mailbox_annotation(
        &mut self,
        id: i64,
        entry: &str,
        userid: &str,
        value: Option<(&[u8], u64)>,
    ) -> Result<()> {
        match value {
            Some((value, modseq)) if !value.is_empty() => {
                self.conn().execute(
                    "INSERT OR REPLACE INTO mailbox_annotations (mailbox, entry, userid, modseq, value) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, entry, userid, to_i64(modseq), value],
                )?;
            }
            _ => {
                self.conn().execute(
                    "DELETE FROM mailbox_annotations WHERE mailbox = ?1 AND entry = ?2 AND userid = ?3",
                    params![id, entry, userid],
                )?;
            }
        }
        Ok(())
    }

    pub fn mailbox_annotations(&self, id: i64) -> Result<Vec<Annotation>> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT entry, userid, modseq, value FROM mailbox_annotations \
             WHERE mailbox = ?1 ORDER BY entry, userid",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(Annotation {
                entry: r.get(0)?,
                userid: r.get(1)?,
                modseq: to_u64(r.get(2)?),
                value: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn record(&self, mailbox_id: i64, uid: u32) -> Result<Option<MessageRecord>> {
        load_record(self.conn(), mailbox_id, uid)
    }

    /// Recomputes a mailbox's CRCs from its records and raises `last_uid` /
    /// `highestmodseq` to what the records reach (the repair path of `verify`).
    pub fn recompute_mailbox(&mut self, name: &str) -> Result<SyncCrcs> {
        let mut m = self
            .mailbox(name)?
            .ok_or_else(|| StoreError::NoSuchMailbox(name.to_owned()))?;
        let uids: Vec<i64> = self
            .conn()
            .prepare("SELECT uid FROM records WHERE mailbox = ?1 ORDER BY uid")?
            .query_map([m.id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut crcs = SyncCrcs::new();
        for uid in uids {
            if let Some(rec) = self.record(m.id, uid as u32)? {
                crcs.add(&rec.record);
                m.state.last_uid = m.state.last_uid.max(rec.record.uid);
                m.state.highestmodseq = m.state.highestmodseq.max(rec.record.modseq);
            }
        }
        self.crc_delta.remove(&m.id);
        self.conn().execute(
            "UPDATE mailboxes SET sync_crc = ?2, sync_crc_annot = ?3 WHERE id = ?1",
            params![m.id, i64::from(crcs.basic), i64::from(crcs.annot)],
        )?;
        self.update_header(&m)?;
        Ok(crcs)
    }

    /// Names of all entries starting with `prefix`, in order.
    pub fn names_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT name FROM mailboxes WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([prefix], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The directory of a real mailbox's files.
    pub fn mailbox_dir(&self, m: &Mailbox) -> Result<PathBuf> {
        Ok(mailbox_dir(
            self.config.partition_root(&m.state.partition)?,
            &m.state.uniqueid,
        ))
    }

    /// Inserts or overwrites one record, with its file (see [`FileSource`]). Keeps the
    /// mailbox's CRCs current. Does not touch the header (`last_uid`, modseqs): the
    /// caller sets those with [`Txn::update_header`].
    pub fn put_record(&mut self, m: &Mailbox, record: &Record, file: FileSource<'_>) -> Result<()> {
        if !m.is_real() {
            return Err(StoreError::Invalid(format!(
                "{} has no message storage",
                m.name()
            )));
        }
        if record.guid.is_null() {
            return Err(StoreError::Invalid(format!(
                "record {} of {} has no GUID",
                record.uid,
                m.name()
            )));
        }
        let old = self.record(m.id, record.uid)?;
        let replaces_file = matches!(file, FileSource::Link(_) | FileSource::Reader(_));
        if replaces_file && old.as_ref().is_some_and(|o| o.has_file) {
            // Committed message files are immutable: a rollback must never be able to
            // leave a record without its bytes.
            return Err(StoreError::Invalid(format!(
                "record {} of {} already has its message file",
                record.uid,
                m.name()
            )));
        }
        let dir = self.mailbox_dir(m)?;
        let path = message_path(&dir, record.uid);
        let has_file = match file {
            FileSource::Keep => old.as_ref().is_some_and(|o| o.has_file),
            FileSource::Remove => {
                if old.as_ref().is_some_and(|o| o.has_file) {
                    self.unlink_after.push(path.clone());
                }
                false
            }
            FileSource::Link(source) => {
                link_or_copy(source, &path)?;
                self.new_file(&dir, record.uid);
                true
            }
            FileSource::Reader(reader) => {
                let (guid, size) = files::write_message(&path, reader)?;
                self.new_file(&dir, record.uid);
                if guid != record.guid || size != u64::from(record.size) {
                    let _ = std::fs::remove_file(&path);
                    self.new_files.pop();
                    return Err(StoreError::GuidMismatch {
                        guid: record.guid.to_hex(),
                        computed: format!("{} ({} bytes)", guid.to_hex(), size),
                    });
                }
                true
            }
        };
        if !has_file && !record.is_expunged() {
            return Err(StoreError::Invalid(format!(
                "record {} of {} is not expunged but has no message file",
                record.uid,
                m.name()
            )));
        }
        let delta = self.crc_delta.entry(m.id).or_default();
        if let Some(old) = &old {
            delta.remove(&old.record);
        }
        delta.add(record);
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT OR REPLACE INTO records (mailbox, uid, modseq, last_updated, flags, \
             user_flags, internaldate, size, guid, thrid, savedate, createdmodseq, has_file) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            m.id,
            i64::from(record.uid),
            to_i64(record.modseq),
            to_i64(record.last_updated),
            i64::from(record.system_flags.bits()),
            record.user_flags.join(" "),
            to_i64(record.internaldate),
            i64::from(record.size),
            &record.guid.0[..],
            to_i64(record.thrid),
            to_i64(record.savedate),
            to_i64(record.createdmodseq),
            i64::from(has_file),
        ])?;
        let had_annotations = old
            .as_ref()
            .is_some_and(|o| !o.record.annotations.is_empty());
        if had_annotations {
            conn.prepare_cached("DELETE FROM record_annotations WHERE mailbox = ?1 AND uid = ?2")?
                .execute(params![m.id, i64::from(record.uid)])?;
        }
        for a in &record.annotations {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO record_annotations (mailbox, uid, entry, userid, modseq, value) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                m.id,
                i64::from(record.uid),
                a.entry,
                a.userid,
                to_i64(a.modseq),
                a.value
            ])?;
        }
        Ok(())
    }

    /// Notes a message file this transaction created (`<dir>/<uid>.`).
    fn new_file(&mut self, dir: &Path, uid: u32) {
        // A transaction writes into few directories, mostly one after the other.
        let index = match self.new_dirs.iter().rposition(|d| d == dir) {
            Some(i) => i,
            None => {
                self.new_dirs.push(dir.to_owned());
                self.new_dirs.len() - 1
            }
        };
        self.new_files.push((index as u32, uid));
    }

    /// The paths of `new_files`, a bounded number at a time.
    fn new_file_paths(&self) -> impl Iterator<Item = Vec<PathBuf>> + '_ {
        /// Paths built at once for the parallel fsync (about 150 KB of them).
        const CHUNK: usize = 1024;
        self.new_files.chunks(CHUNK).map(|chunk| {
            chunk
                .iter()
                .map(|&(dir, uid)| message_path(&self.new_dirs[dir as usize], uid))
                .collect()
        })
    }

    /// Renames a mailbox, moving its files if the partition changes.
    pub fn rename_mailbox(&mut self, id: i64, new_name: &str, new_partition: &str) -> Result<()> {
        validate_internal(new_name)?;
        let m = self.mailbox_by_id(id)?;
        if let Some(existing) = self.mailbox(new_name)? {
            if existing.id != id && existing.is_real() {
                return Err(StoreError::MailboxExists(new_name.to_owned()));
            }
            if existing.id != id {
                self.conn()
                    .execute("DELETE FROM mailboxes WHERE id = ?1", [existing.id])?;
            }
        }
        if m.is_real() && new_partition != m.state.partition {
            validate_partition(new_partition)?;
            let new_root = self.config.partition_root(new_partition)?.to_path_buf();
            let old_dir = self.mailbox_dir(&m)?;
            let new_dir = mailbox_dir(&new_root, &m.state.uniqueid);
            files::create_dir_durable(&new_dir)?;
            let mut uids = Vec::new();
            {
                let mut stmt = self
                    .conn()
                    .prepare("SELECT uid FROM records WHERE mailbox = ?1 AND has_file = 1")?;
                let rows = stmt.query_map([id], |r| r.get::<_, i64>(0))?;
                for uid in rows {
                    uids.push(uid? as u32);
                }
            }
            for uid in uids {
                let from = message_path(&old_dir, uid);
                let to = message_path(&new_dir, uid);
                link_or_copy(&from, &to)?;
                self.new_file(&new_dir, uid);
                self.unlink_after.push(from);
            }
            self.rmdir_after.push(old_dir);
        }
        let owner = self.config.namespace.owner(new_name);
        // The quota root follows the name: a mailbox moved under another root counts
        // against that one.
        let quotaroot = self.quota_root_for(new_name)?;
        self.conn().execute(
            "UPDATE mailboxes SET name = ?2, partition = ?3, owner = ?4, quotaroot = ?5 WHERE id = ?1",
            params![id, new_name, new_partition, owner, quotaroot],
        )?;
        Ok(())
    }

    /// Removes a mailbox with its records and annotations; its files go after the
    /// commit. With `tombstone`, a deleted-type entry (`d`) keeps the name and
    /// uniqueid, with that modseq, so a replica can be told.
    pub fn delete_mailbox(&mut self, id: i64, tombstone: Option<u64>) -> Result<()> {
        let m = self.mailbox_by_id(id)?;
        if m.is_real() {
            let dir = self.mailbox_dir(&m)?;
            let mut stmt = self
                .conn()
                .prepare("SELECT uid FROM records WHERE mailbox = ?1 AND has_file = 1")?;
            let uids: Vec<i64> = stmt
                .query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            drop(stmt);
            for uid in uids {
                self.unlink_after.push(message_path(&dir, uid as u32));
            }
            self.rmdir_after.push(dir);
        }
        let conn = self.conn();
        conn.execute("DELETE FROM records WHERE mailbox = ?1", [id])?;
        conn.execute("DELETE FROM record_annotations WHERE mailbox = ?1", [id])?;
        conn.execute("DELETE FROM mailbox_annotations WHERE mailbox = ?1", [id])?;
        self.crc_delta.remove(&id);
        match tombstone {
            Some(modseq) => {
                self.conn().execute(
                    "UPDATE mailboxes SET mbtype = 'ed', last_uid = 0, highestmodseq = ?2, \
                     foldermodseq = ?2, sync_crc = 0, sync_crc_annot = ?3 WHERE id = ?1",
                    params![
                        id,
                        to_i64(modseq),
                        i64::from(csync_protocol::crc::ANNOT_CRC_START)
                    ],
                )?;
            }
            None => {
                self.conn()
                    .execute("DELETE FROM mailboxes WHERE id = ?1", [id])?;
            }
        }
        Ok(())
    }

    /// Writes a user's seen record for a mailbox it does not own.
    pub fn set_seen(&mut self, userid: &str, seen: &SeenRecord) -> Result<()> {
        validate_userid(userid)?;
        self.conn().execute(
            "INSERT OR REPLACE INTO seen (userid, uniqueid, lastread, lastuid, lastchange, seenuids) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                userid,
                seen.uniqueid,
                to_i64(seen.lastread),
                i64::from(seen.lastuid),
                to_i64(seen.lastchange),
                seen.seenuids
            ],
        )?;
        Ok(())
    }

    /// Subscribes (or unsubscribes) a user to an internal name; the mailbox need not
    /// exist, as in Cyrus.
    pub fn set_subscribed(&mut self, userid: &str, mboxname: &str, subscribed: bool) -> Result<()> {
        validate_userid(userid)?;
        validate_internal(mboxname)?;
        if subscribed {
            self.conn().execute(
                "INSERT OR IGNORE INTO subscriptions (userid, mboxname) VALUES (?1, ?2)",
                params![userid, mboxname],
            )?;
        } else {
            self.conn().execute(
                "DELETE FROM subscriptions WHERE userid = ?1 AND mboxname = ?2",
                params![userid, mboxname],
            )?;
        }
        Ok(())
    }

    /// Creates or replaces a quota root (limits only; usage is computed).
    pub fn set_quota(&mut self, quota: &Quota) -> Result<()> {
        validate_internal(&quota.root)?;
        self.conn().execute(
            "INSERT OR REPLACE INTO quotas (root, legacy_limit, storage, message, \
             annotation_storage, num_folders, modseq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                quota.root,
                i64::from(quota.limit),
                quota.storage.map(i64::from),
                quota.message.map(i64::from),
                quota.annotation_storage.map(i64::from),
                quota.num_folders.map(i64::from),
                quota.modseq.map(to_i64),
            ],
        )?;
        // Mailboxes at or below the root now count against it.
        self.conn().execute(
            "UPDATE mailboxes SET quotaroot = ?1 WHERE (name = ?1 OR substr(name, 1, length(?1) + 1) = ?1 || '.') \
             AND (quotaroot IS NULL OR length(quotaroot) <= length(?1))",
            [&quota.root],
        )?;
        Ok(())
    }

    /// Removes a quota root; its mailboxes fall back to the nearest enclosing root.
    pub fn remove_quota(&mut self, root: &str) -> Result<bool> {
        let removed = self
            .conn()
            .execute("DELETE FROM quotas WHERE root = ?1", [root])?
            > 0;
        if removed {
            let mut stmt = self
                .conn()
                .prepare("SELECT id, name FROM mailboxes WHERE quotaroot = ?1")?;
            let rows: Vec<(i64, String)> = stmt
                .query_map([root], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            drop(stmt);
            for (id, name) in rows {
                let new_root = self.quota_root_for(&name)?;
                self.conn().execute(
                    "UPDATE mailboxes SET quotaroot = ?2 WHERE id = ?1",
                    params![id, new_root],
                )?;
            }
        }
        Ok(removed)
    }

    /// The nearest quota root at or above `name`.
    pub fn quota_root_for(&self, name: &str) -> Result<Option<String>> {
        let mut candidate = name;
        loop {
            let found: Option<String> = self
                .conn()
                .prepare_cached("SELECT root FROM quotas WHERE root = ?1")?
                .query_row([candidate], |r| r.get(0))
                .optional()?;
            if found.is_some() {
                return Ok(found);
            }
            match candidate.rsplit_once('.') {
                Some((parent, _)) => candidate = parent,
                None => return Ok(None),
            }
        }
    }

    /// Stores a sieve script (by name, without `.script`).
    pub fn put_sieve(
        &mut self,
        userid: &str,
        name: &str,
        content: &[u8],
        last_update: u64,
    ) -> Result<()> {
        validate_userid(userid)?;
        validate_script_name(name)?;
        self.conn().execute(
            "INSERT INTO sieve_scripts (userid, name, content, last_update, active) \
             VALUES (?1, ?2, ?3, ?4, 0) ON CONFLICT(userid, name) DO UPDATE SET \
             content = excluded.content, last_update = excluded.last_update",
            params![userid, name, content, to_i64(last_update)],
        )?;
        Ok(())
    }

    /// Deletes a sieve script; returns whether it existed.
    pub fn delete_sieve(&mut self, userid: &str, name: &str) -> Result<bool> {
        Ok(self.conn().execute(
            "DELETE FROM sieve_scripts WHERE userid = ?1 AND name = ?2",
            params![userid, name],
        )? > 0)
    }

    /// Makes `name` the active script (`None`: none active).
    pub fn activate_sieve(&mut self, userid: &str, name: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE sieve_scripts SET active = (name = ?2) WHERE userid = ?1",
            params![userid, name.unwrap_or("")],
        )?;
        if let Some(n) = name {
            let exists: bool = self.conn().query_row(
                "SELECT COUNT(*) FROM sieve_scripts WHERE userid = ?1 AND name = ?2",
                params![userid, n],
                |r| r.get::<_, i64>(0).map(|c| c > 0),
            )?;
            if !exists {
                return Err(StoreError::Invalid(format!(
                    "no sieve script {n} for {userid}"
                )));
            }
        }
        Ok(())
    }

    /// Removes a user's seen state, subscriptions and sieve scripts.
    pub fn purge_user_metadata(&mut self, userid: &str) -> Result<()> {
        let conn = self.conn();
        conn.execute("DELETE FROM seen WHERE userid = ?1", [userid])?;
        conn.execute("DELETE FROM subscriptions WHERE userid = ?1", [userid])?;
        conn.execute("DELETE FROM sieve_scripts WHERE userid = ?1", [userid])?;
        Ok(())
    }

    /// Makes the transaction durable; returns the sync_log records to append.
    pub(crate) fn commit(mut self) -> Result<Vec<LogEntry>> {
        let deltas = std::mem::take(&mut self.crc_delta);
        for (id, delta) in deltas {
            if delta == SyncCrcs::default() {
                continue;
            }
            let (basic, annot): (i64, i64) = self
                .conn()
                .prepare_cached("SELECT sync_crc, sync_crc_annot FROM mailboxes WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            self.conn()
                .prepare_cached(
                    "UPDATE mailboxes SET sync_crc = ?2, sync_crc_annot = ?3 WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    i64::from(basic as u32 ^ delta.basic),
                    i64::from(annot as u32 ^ delta.annot)
                ])?;
        }
        for paths in self.new_file_paths() {
            files::sync_files(&paths, &[])?;
        }
        files::sync_files(&[], &self.new_dirs)?;
        let tx = self
            .tx
            .take()
            .ok_or_else(|| StoreError::Invalid("transaction already finished".into()))?;
        tx.commit()?;
        for path in &self.unlink_after {
            if let Err(e) = std::fs::remove_file(path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not unlink after commit");
            }
        }
        for dir in &self.rmdir_after {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(std::mem::take(&mut self.log))
    }

    /// Rolls back and removes the files this transaction wrote.
    pub(crate) fn abort(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.rollback();
        }
        for paths in self.new_file_paths() {
            for path in paths {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

fn validate_script_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 200
        || name.starts_with('.')
        || !name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\')
    {
        return Err(StoreError::BadName {
            name: name.to_owned(),
            reason: "sieve script names are printable ASCII without '/' or a leading dot",
        });
    }
    Ok(())
}
