//! Opening the store and reading it. Record iteration streams from the index, so a
//! mailbox of a million records is walked in constant memory.

use std::path::PathBuf;

use csync_protocol::mailbox::{Annotation, MailboxState, Record, SystemFlags};
use csync_protocol::metadata::{Quota, SeenRecord, SieveEntry};
use csync_protocol::{Guid, MailboxAnnotation};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::config::StoreConfig;
use crate::files::{mailbox_dir, message_path};
use crate::names::{Namespace, validate_internal, validate_userid};
use crate::txn::{ChangeLog, Txn};
use crate::{Result, StoreError, schema};

pub(crate) fn to_i64(n: u64) -> i64 {
    n as i64
}

pub(crate) fn to_u64(n: i64) -> u64 {
    n as u64
}

/// A mailbox-list entry with its header (no records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    /// Row id in the index (stable for the mailbox's life, not across stores).
    pub id: i64,
    /// The owning userid; `None` for shared mailboxes.
    pub owner: Option<String>,
    /// Highest modseq of records already purged from the index.
    pub deletedmodseq: u64,
    /// The header as it travels on the wire (`records` is `None`).
    pub state: MailboxState,
}

impl Mailbox {
    pub fn name(&self) -> &str {
        &self.state.mboxname
    }

    /// A deleted-mailbox tombstone (`d` in the type).
    pub fn is_tombstone(&self) -> bool {
        self.state
            .mboxtype
            .as_deref()
            .is_some_and(|t| t.contains('d'))
    }

    /// An intermediate placeholder (`i` in the type).
    pub fn is_intermediate(&self) -> bool {
        self.state
            .mboxtype
            .as_deref()
            .is_some_and(|t| t.contains('i'))
    }

    /// Has message storage (not a tombstone or intermediate).
    pub fn is_real(&self) -> bool {
        !self.is_tombstone() && !self.is_intermediate()
    }
}

/// A record as stored: the wire fields plus whether the message file is still there
/// (an expunged record whose file was removed has none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRecord {
    pub record: Record,
    pub has_file: bool,
}

pub(crate) const MAILBOX_COLUMNS: &str = "id, name, uniqueid, owner, mbtype, partition, acl, \
    options, uidvalidity, last_uid, highestmodseq, recentuid, recenttime, last_appenddate, \
    pop3_last_login, pop3_show_after, xconvmodseq, raclmodseq, createdmodseq, foldermodseq, \
    deletedmodseq, sync_crc, sync_crc_annot, quotaroot";

pub(crate) fn mailbox_from_row(row: &Row<'_>) -> rusqlite::Result<Mailbox> {
    let mbtype: String = row.get(4)?;
    Ok(Mailbox {
        id: row.get(0)?,
        owner: row.get(3)?,
        deletedmodseq: to_u64(row.get(20)?),
        state: MailboxState {
            uniqueid: row.get(2)?,
            mboxname: row.get(1)?,
            mboxtype: (!mbtype.is_empty()).then_some(mbtype),
            sync_crc: row.get::<_, i64>(21)? as u32,
            sync_crc_annot: Some(row.get::<_, i64>(22)? as u32),
            last_uid: row.get::<_, i64>(9)? as u32,
            highestmodseq: to_u64(row.get(10)?),
            recentuid: row.get::<_, i64>(11)? as u32,
            recenttime: to_u64(row.get(12)?),
            last_appenddate: to_u64(row.get(13)?),
            pop3_last_login: to_u64(row.get(14)?),
            pop3_show_after: to_u64(row.get(15)?),
            xconvmodseq: to_u64(row.get(16)?),
            raclmodseq: to_u64(row.get(17)?),
            uidvalidity: row.get::<_, i64>(8)? as u32,
            partition: row.get(5)?,
            acl: row.get(6)?,
            options: row.get(7)?,
            quotaroot: row.get(23)?,
            createdmodseq: to_u64(row.get(18)?),
            foldermodseq: to_u64(row.get(19)?),
            annotations: Vec::new(),
            since: None,
            records: None,
        },
    })
}

pub(crate) const RECORD_COLUMNS: &str = "uid, modseq, last_updated, flags, user_flags, \
    internaldate, size, guid, thrid, savedate, createdmodseq, has_file";

pub(crate) fn record_from_row(row: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    let user_flags: String = row.get(4)?;
    let guid_bytes: Vec<u8> = row.get(7)?;
    let mut guid = [0u8; 20];
    if guid_bytes.len() == 20 {
        guid.copy_from_slice(&guid_bytes);
    }
    Ok(MessageRecord {
        record: Record {
            uid: row.get::<_, i64>(0)? as u32,
            modseq: to_u64(row.get(1)?),
            last_updated: to_u64(row.get(2)?),
            system_flags: SystemFlags::from_bits(row.get::<_, i64>(3)? as u8),
            user_flags: if user_flags.is_empty() {
                Vec::new()
            } else {
                user_flags.split(' ').map(str::to_owned).collect()
            },
            internaldate: to_u64(row.get(5)?),
            size: row.get::<_, i64>(6)? as u32,
            guid: Guid(guid),
            thrid: to_u64(row.get(8)?),
            savedate: to_u64(row.get(9)?),
            createdmodseq: to_u64(row.get(10)?),
            annotations: Vec::new(),
        },
        has_file: row.get::<_, i64>(11)? != 0,
    })
}

/// A Cyrus-style store: the index plus the partitions' files.
pub struct Store {
    pub(crate) config: StoreConfig,
    pub(crate) conn: Connection,
    pub(crate) changelog: Option<Box<dyn ChangeLog>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("configdirectory", &self.config.configdirectory)
            .field("partitions", &self.config.partitions)
            .finish()
    }
}

impl Store {
    /// Opens the store, creating the configuration directory and index if needed.
    pub fn open(config: StoreConfig) -> Result<Store> {
        crate::files::create_dir_durable(&config.configdirectory)?;
        for (name, root) in &config.partitions {
            crate::names::validate_partition(name)?;
            crate::files::create_dir_durable(root)?;
        }
        let conn = schema::open(&config.index_path())?;
        Ok(Store {
            config,
            conn,
            changelog: None,
        })
    }

    /// Where sync_log records go after each commit (none: nothing is logged).
    pub fn set_changelog(&mut self, changelog: Option<Box<dyn ChangeLog>>) {
        self.changelog = changelog;
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn namespace(&self) -> &Namespace {
        &self.config.namespace
    }

    /// Runs `f` in one write transaction (see [`Txn`]): all of it or nothing.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut Txn<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut txn = Txn::new(tx, &self.config);
        let value = match f(&mut txn) {
            Ok(v) => v,
            Err(e) => {
                txn.abort();
                return Err(e);
            }
        };
        let log = txn.commit()?;
        if !log.is_empty()
            && let Some(changelog) = &self.changelog
        {
            changelog
                .append(&log)
                .map_err(|e| StoreError::SyncLog(e.to_string()))?;
        }
        Ok(value)
    }

    /// A mailbox-list entry by internal name (tombstones and intermediates included).
    pub fn mailbox(&self, name: &str) -> Result<Option<Mailbox>> {
        let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE name = ?1");
        let mut mailbox = self
            .conn
            .prepare_cached(&sql)?
            .query_row([name], mailbox_from_row)
            .optional()?;
        if let Some(m) = &mut mailbox {
            m.state.annotations = self.mailbox_annotations(m.id)?;
        }
        Ok(mailbox)
    }

    /// A mailbox by name that must exist and hold messages.
    pub fn real_mailbox(&self, name: &str) -> Result<Mailbox> {
        match self.mailbox(name)? {
            Some(m) if m.is_real() => Ok(m),
            _ => Err(StoreError::NoSuchMailbox(name.to_owned())),
        }
    }

    /// A live (non-tombstone) mailbox by uniqueid.
    pub fn mailbox_by_uniqueid(&self, uniqueid: &str) -> Result<Option<Mailbox>> {
        let sql = format!(
            "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE uniqueid = ?1 \
             AND instr(mbtype, 'd') = 0 ORDER BY id LIMIT 1"
        );
        let mut mailbox = self
            .conn
            .prepare_cached(&sql)?
            .query_row([uniqueid], mailbox_from_row)
            .optional()?;
        if let Some(m) = &mut mailbox {
            m.state.annotations = self.mailbox_annotations(m.id)?;
        }
        Ok(mailbox)
    }

    /// Every entry of a user (INBOX tree and the user's `DELETED.*` mailboxes),
    /// tombstones included, in name order.
    pub fn user_mailboxes(&self, userid: &str) -> Result<Vec<Mailbox>> {
        validate_userid(userid)?;
        let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE owner = ?1 ORDER BY name");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([userid], mailbox_from_row)?;
        let mut out = Vec::new();
        for row in rows {
            let mut m = row?;
            m.state.annotations = self.mailbox_annotations(m.id)?;
            out.push(m);
        }
        Ok(out)
    }

    /// Calls `f` for every mailbox-list entry in name order, optionally from a prefix
    /// on. Streams: memory does not grow with the number of mailboxes.
    pub fn for_each_mailbox(
        &self,
        from: Option<&str>,
        mut f: impl FnMut(Mailbox) -> Result<()>,
    ) -> Result<()> {
        let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE name >= ?1 ORDER BY name");
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query([from.unwrap_or("")])?;
        while let Some(row) = rows.next()? {
            let mut m = mailbox_from_row(row)?;
            m.state.annotations = self.mailbox_annotations(m.id)?;
            f(m)?;
        }
        Ok(())
    }

    /// All users that own at least one entry.
    pub fn users(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT owner FROM mailboxes WHERE owner IS NOT NULL ORDER BY owner",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Mailbox-level annotations, ordered by entry then userid.
    pub fn mailbox_annotations(&self, mailbox_id: i64) -> Result<Vec<Annotation>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT entry, userid, modseq, value FROM mailbox_annotations \
             WHERE mailbox = ?1 ORDER BY entry, userid",
        )?;
        let rows = stmt.query_map([mailbox_id], |r| {
            Ok(Annotation {
                entry: r.get(0)?,
                userid: r.get(1)?,
                modseq: to_u64(r.get(2)?),
                value: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Server annotations (`MBOXNAME ""`) or a mailbox's, in the shape of
    /// `* ANNOTATION` replies.
    pub fn annotations_of(&self, mboxname: &str) -> Result<Vec<MailboxAnnotation>> {
        let id = if mboxname.is_empty() {
            0
        } else {
            match self.mailbox(mboxname)? {
                Some(m) => m.id,
                None => return Ok(Vec::new()),
            }
        };
        Ok(self
            .mailbox_annotations(id)?
            .into_iter()
            .map(|a| MailboxAnnotation {
                mboxname: mboxname.to_owned(),
                entry: a.entry,
                userid: a.userid,
                value: Some(a.value),
            })
            .collect())
    }

    /// Streams a mailbox's records with `modseq > since_modseq`, ascending uid, with
    /// their annotations.
    pub fn for_each_record(
        &self,
        mailbox_id: i64,
        since_modseq: u64,
        mut f: impl FnMut(MessageRecord) -> Result<()>,
    ) -> Result<()> {
        // A full walk follows the primary key (the `+` keeps SQLite off the modseq
        // index, through which it would fetch every row and then sort them all by uid);
        // a walk since a modseq, usually over few records, uses that index.
        let modseq = if since_modseq == 0 {
            "+modseq"
        } else {
            "modseq"
        };
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE mailbox = ?1 AND {modseq} > ?2 \
             ORDER BY uid"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![mailbox_id, to_i64(since_modseq)])?;
        let mut annot_stmt = self.conn.prepare_cached(
            "SELECT a.uid, a.entry, a.userid, a.modseq, a.value FROM record_annotations a \
             JOIN records r ON r.mailbox = a.mailbox AND r.uid = a.uid \
             WHERE a.mailbox = ?1 AND r.modseq > ?2 ORDER BY a.uid, a.entry, a.userid",
        )?;
        let mut annots = annot_stmt.query(params![mailbox_id, to_i64(since_modseq)])?;
        let mut pending: Option<(u32, Annotation)> = None;
        let next_annot = |annots: &mut rusqlite::Rows<'_>| -> Result<Option<(u32, Annotation)>> {
            Ok(match annots.next()? {
                Some(r) => Some((
                    r.get::<_, i64>(0)? as u32,
                    Annotation {
                        entry: r.get(1)?,
                        userid: r.get(2)?,
                        modseq: to_u64(r.get(3)?),
                        value: r.get(4)?,
                    },
                )),
                None => None,
            })
        };
        pending = match pending {
            None => next_annot(&mut annots)?,
            p => p,
        };
        while let Some(row) = rows.next()? {
            let mut rec = record_from_row(row)?;
            while let Some((uid, _)) = &pending {
                if *uid < rec.record.uid {
                    pending = next_annot(&mut annots)?;
                } else if *uid == rec.record.uid {
                    if let Some((_, a)) = pending.take() {
                        rec.record.annotations.push(a);
                    }
                    pending = next_annot(&mut annots)?;
                } else {
                    break;
                }
            }
            f(rec)?;
        }
        Ok(())
    }

    /// Messages in a mailbox that are not expunged (what IMAP's EXISTS counts), from
    /// the index alone.
    pub fn message_count(&self, mailbox_id: i64) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM records WHERE mailbox = ?1 AND (flags & 16) = 0",
            [mailbox_id],
            |r| r.get(0),
        )?;
        Ok(to_u64(n))
    }

    /// One record by uid.
    pub fn record(&self, mailbox_id: i64, uid: u32) -> Result<Option<MessageRecord>> {
        crate::txn::load_record(&self.conn, mailbox_id, uid)
    }

    /// The directory of a mailbox's message files.
    pub fn mailbox_dir(&self, mailbox: &Mailbox) -> Result<PathBuf> {
        let root = self.config.partition_root(&mailbox.state.partition)?;
        Ok(mailbox_dir(root, &mailbox.state.uniqueid))
    }

    /// The message file of a record.
    pub fn message_path(&self, mailbox: &Mailbox, uid: u32) -> Result<PathBuf> {
        Ok(message_path(&self.mailbox_dir(mailbox)?, uid))
    }

    /// A file holding the message with this GUID, preferring the given partition:
    /// what `APPLY RESERVE` looks for. Only mailboxes named in `within` are searched
    /// when it is given.
    pub fn find_guid(
        &self,
        guid: &Guid,
        partition: &str,
        within: Option<&[String]>,
    ) -> Result<Option<PathBuf>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT r.uid, m.{} FROM records r JOIN mailboxes m ON m.id = r.mailbox \
             WHERE r.guid = ?1 AND r.has_file = 1 \
             ORDER BY (m.partition = ?2) DESC LIMIT 64",
            MAILBOX_COLUMNS.replace(", ", ", m.")
        ))?;
        let mut rows = stmt.query(params![&guid.0[..], partition])?;
        while let Some(row) = rows.next()? {
            let uid = row.get::<_, i64>(0)? as u32;
            let m = mailbox_from_row_offset(row)?;
            if let Some(names) = within
                && !names.iter().any(|n| n == m.name())
            {
                continue;
            }
            let path = self.message_path(&m, uid)?;
            if path.is_file() {
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    /// Seen records of a user for mailboxes it does not own.
    pub fn seen(&self, userid: &str) -> Result<Vec<SeenRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT uniqueid, lastread, lastuid, lastchange, seenuids FROM seen \
             WHERE userid = ?1 ORDER BY uniqueid",
        )?;
        let rows = stmt.query_map([userid], |r| {
            Ok(SeenRecord {
                uniqueid: r.get(0)?,
                lastread: to_u64(r.get(1)?),
                lastuid: r.get::<_, i64>(2)? as u32,
                lastchange: to_u64(r.get(3)?),
                seenuids: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Subscribed internal names of a user.
    pub fn subscriptions(&self, userid: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT mboxname FROM subscriptions WHERE userid = ?1 ORDER BY mboxname",
        )?;
        let rows = stmt.query_map([userid], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A quota root.
    pub fn quota(&self, root: &str) -> Result<Option<Quota>> {
        Ok(self
            .conn
            .query_row(
                "SELECT root, legacy_limit, storage, message, annotation_storage, num_folders, \
                 modseq FROM quotas WHERE root = ?1",
                [root],
                |r| {
                    Ok(Quota {
                        root: r.get(0)?,
                        limit: r.get::<_, i64>(1)? as u32,
                        storage: r.get::<_, Option<i64>>(2)?.map(|v| v as u32),
                        message: r.get::<_, Option<i64>>(3)?.map(|v| v as u32),
                        annotation_storage: r.get::<_, Option<i64>>(4)?.map(|v| v as u32),
                        num_folders: r.get::<_, Option<i64>>(5)?.map(|v| v as u32),
                        modseq: r.get::<_, Option<i64>>(6)?.map(to_u64),
                    })
                },
            )
            .optional()?)
    }

    /// All quota roots, in name order.
    pub fn quota_roots(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT root FROM quotas ORDER BY root")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Storage used under a quota root: (KiB, messages, folders), counting
    /// non-expunged records of mailboxes whose quotaroot is `root`.
    pub fn quota_usage(&self, root: &str) -> Result<(u64, u64, u64)> {
        let (bytes, messages): (i64, i64) = self.conn.query_row(
            "SELECT COALESCE(SUM(r.size), 0), COUNT(r.uid) FROM records r \
             JOIN mailboxes m ON m.id = r.mailbox \
             WHERE m.quotaroot = ?1 AND (r.flags & 16) = 0",
            [root],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let folders: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM mailboxes WHERE quotaroot = ?1 AND instr(mbtype, 'd') = 0 \
             AND instr(mbtype, 'i') = 0",
            [root],
            |r| r.get(0),
        )?;
        Ok((
            to_u64(bytes).div_ceil(1024),
            to_u64(messages),
            to_u64(folders),
        ))
    }

    /// A user's sieve scripts in the legacy listing form (`<name>.script` entries plus
    /// a `<name>.bc` entry marking the active one), spec §3.5.
    pub fn sieve_entries(&self, userid: &str) -> Result<Vec<SieveEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, content, last_update, active FROM sieve_scripts \
             WHERE userid = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([userid], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                to_u64(r.get(2)?),
                r.get::<_, i64>(3)? != 0,
            ))
        })?;
        let mut out = Vec::new();
        let mut active = None;
        for row in rows {
            let (name, content, last_update, is_active) = row?;
            let (guid, _) = crate::files::hash_reader(&content[..])
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            out.push(SieveEntry {
                filename: format!("{name}.script"),
                last_update,
                guid: Some(guid),
                is_active: Some(false),
            });
            if is_active {
                active = Some(name);
            }
        }
        if let Some(name) = active {
            out.push(SieveEntry {
                filename: format!("{name}.bc"),
                last_update: 0,
                guid: Some(Guid::default()),
                is_active: Some(true),
            });
        }
        Ok(out)
    }

    /// One sieve script's content and last update, by script name (no suffix).
    pub fn sieve_script(&self, userid: &str, name: &str) -> Result<Option<(Vec<u8>, u64, bool)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT content, last_update, active FROM sieve_scripts \
                 WHERE userid = ?1 AND name = ?2",
                [userid, name],
                |r| Ok((r.get(0)?, to_u64(r.get(1)?), r.get::<_, i64>(2)? != 0)),
            )
            .optional()?)
    }

    /// Checks a name is acceptable as an internal mailbox name.
    pub fn check_name(&self, name: &str) -> Result<()> {
        validate_internal(name)
    }
}

/// The mailbox columns of a `find_guid` row, which selects `uid` first.
fn mailbox_from_row_offset(row: &Row<'_>) -> rusqlite::Result<Mailbox> {
    let mbtype: String = row.get(5)?;
    Ok(Mailbox {
        id: row.get(1)?,
        owner: row.get(4)?,
        deletedmodseq: to_u64(row.get(21)?),
        state: MailboxState {
            uniqueid: row.get(3)?,
            mboxname: row.get(2)?,
            mboxtype: (!mbtype.is_empty()).then_some(mbtype),
            partition: row.get(6)?,
            ..MailboxState::default()
        },
    })
}
