//! The SQLite index: one database per store, in WAL mode with `synchronous=FULL`, so a
//! committed transaction survives a power cut and an interrupted one leaves nothing.

use rusqlite::Connection;

use crate::StoreError;

pub(crate) const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per mailbox-list entry: real mailboxes, intermediates (mbtype 'i') and
-- tombstones (mbtype 'd').
CREATE TABLE IF NOT EXISTS mailboxes (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    uniqueid        TEXT NOT NULL,
    owner           TEXT,
    mbtype          TEXT NOT NULL DEFAULT '',
    partition       TEXT NOT NULL DEFAULT '',
    acl             TEXT NOT NULL DEFAULT '',
    options         TEXT NOT NULL DEFAULT '',
    uidvalidity     INTEGER NOT NULL DEFAULT 0,
    last_uid        INTEGER NOT NULL DEFAULT 0,
    highestmodseq   INTEGER NOT NULL DEFAULT 0,
    recentuid       INTEGER NOT NULL DEFAULT 0,
    recenttime      INTEGER NOT NULL DEFAULT 0,
    last_appenddate INTEGER NOT NULL DEFAULT 0,
    pop3_last_login INTEGER NOT NULL DEFAULT 0,
    pop3_show_after INTEGER NOT NULL DEFAULT 0,
    xconvmodseq     INTEGER NOT NULL DEFAULT 0,
    raclmodseq      INTEGER NOT NULL DEFAULT 0,
    createdmodseq   INTEGER NOT NULL DEFAULT 0,
    foldermodseq    INTEGER NOT NULL DEFAULT 0,
    deletedmodseq   INTEGER NOT NULL DEFAULT 0,
    sync_crc        INTEGER NOT NULL DEFAULT 0,
    sync_crc_annot  INTEGER NOT NULL DEFAULT 12345678,
    quotaroot       TEXT
);
CREATE INDEX IF NOT EXISTS mailboxes_uniqueid ON mailboxes(uniqueid);
CREATE INDEX IF NOT EXISTS mailboxes_owner ON mailboxes(owner, name);

CREATE TABLE IF NOT EXISTS records (
    mailbox       INTEGER NOT NULL,
    uid           INTEGER NOT NULL,
    modseq        INTEGER NOT NULL,
    last_updated  INTEGER NOT NULL,
    flags         INTEGER NOT NULL,
    user_flags    TEXT NOT NULL DEFAULT '',
    internaldate  INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    guid          BLOB NOT NULL,
    thrid         INTEGER NOT NULL DEFAULT 0,
    savedate      INTEGER NOT NULL DEFAULT 0,
    createdmodseq INTEGER NOT NULL DEFAULT 0,
    has_file      INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (mailbox, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_guid ON records(guid);
CREATE INDEX IF NOT EXISTS records_modseq ON records(mailbox, modseq);

CREATE TABLE IF NOT EXISTS record_annotations (
    mailbox INTEGER NOT NULL,
    uid     INTEGER NOT NULL,
    entry   TEXT NOT NULL,
    userid  TEXT NOT NULL,
    modseq  INTEGER NOT NULL,
    value   BLOB NOT NULL,
    PRIMARY KEY (mailbox, uid, entry, userid)
) WITHOUT ROWID;

-- mailbox 0 holds server annotations (MBOXNAME "").
CREATE TABLE IF NOT EXISTS mailbox_annotations (
    mailbox INTEGER NOT NULL,
    entry   TEXT NOT NULL,
    userid  TEXT NOT NULL,
    modseq  INTEGER NOT NULL,
    value   BLOB NOT NULL,
    PRIMARY KEY (mailbox, entry, userid)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS seen (
    userid     TEXT NOT NULL,
    uniqueid   TEXT NOT NULL,
    lastread   INTEGER NOT NULL,
    lastuid    INTEGER NOT NULL,
    lastchange INTEGER NOT NULL,
    seenuids   TEXT NOT NULL,
    PRIMARY KEY (userid, uniqueid)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS subscriptions (
    userid  TEXT NOT NULL,
    mboxname TEXT NOT NULL,
    PRIMARY KEY (userid, mboxname)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS quotas (
    root               TEXT PRIMARY KEY,
    legacy_limit       INTEGER NOT NULL,
    storage            INTEGER,
    message            INTEGER,
    annotation_storage INTEGER,
    num_folders        INTEGER,
    modseq             INTEGER
);

CREATE TABLE IF NOT EXISTS sieve_scripts (
    userid      TEXT NOT NULL,
    name        TEXT NOT NULL,
    content     BLOB NOT NULL,
    last_update INTEGER NOT NULL,
    active      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (userid, name)
) WITHOUT ROWID;
"#;

/// Opens (creating if needed) the index with durable settings.
pub(crate) fn open(path: &std::path::Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(60))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    // Every statement of an APPLY MAILBOX stays prepared (the default keeps 16).
    conn.set_prepared_statement_cache_capacity(64);
    // Several processes or sessions may open a new store at once: create and stamp
    // the schema in one write transaction so exactly one of them does it.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let created = (|| -> Result<(), StoreError> {
        conn.execute_batch(SCHEMA)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?1)",
            [SCHEMA_VERSION.to_string()],
        )?;
        Ok(())
    })();
    match created {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    let version: String =
        conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })?;
    if version != SCHEMA_VERSION.to_string() {
        return Err(StoreError::Corrupt(format!(
            "index schema version {version} is not {SCHEMA_VERSION}"
        )));
    }
    Ok(conn)
}
