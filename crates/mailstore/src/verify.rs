//! `verify`: recompute GUIDs and CRCs, check the index against the files, and repair
//! what can be repaired without losing mail (Cyrus's `reconstruct` and `mbexamine`).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use csync_protocol::crc::SyncCrcs;

use crate::files::{hash_file, mailbox_dir, message_path};
use crate::names::validate_uniqueid;
use crate::store::{Mailbox, Store};
use crate::txn::Txn;
use crate::{Result, StoreError};

/// Something wrong with the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A record that should have a file has none.
    MissingFile {
        mailbox: String,
        uid: u32,
        path: PathBuf,
    },
    /// A file whose SHA-1 or size differs from its record.
    BadFile {
        mailbox: String,
        uid: u32,
        expected: String,
        found: String,
    },
    /// Stored CRCs differ from the ones computed from the records.
    Crc {
        mailbox: String,
        stored: (u32, u32),
        computed: (u32, u32),
    },
    /// A record above `last_uid`, or with a modseq above `highestmodseq`.
    Counters { mailbox: String, detail: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::MissingFile { mailbox, uid, path } => {
                write!(
                    f,
                    "{mailbox} uid {uid}: message file {} is missing",
                    path.display()
                )
            }
            Problem::BadFile {
                mailbox,
                uid,
                expected,
                found,
            } => write!(
                f,
                "{mailbox} uid {uid}: file is {found}, index says {expected}"
            ),
            Problem::Crc {
                mailbox,
                stored,
                computed,
            } => write!(
                f,
                "{mailbox}: stored SYNC_CRC/SYNC_CRC_ANNOT {}/{} but records give {}/{}",
                stored.0, stored.1, computed.0, computed.1
            ),
            Problem::Counters { mailbox, detail } => write!(f, "{mailbox}: {detail}"),
        }
    }
}

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub mailboxes: u64,
    pub records: u64,
    pub bytes_hashed: u64,
    pub problems: Vec<Problem>,
    /// Files and directories nothing refers to: what an interrupted transaction leaves
    /// (harmless; removed by `repair`).
    pub leftovers: Vec<PathBuf>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Checks every mailbox (or those whose names start with `prefix`). With
    /// `hash_files`, every message file is re-read and its SHA-1 compared.
    pub fn verify(&self, prefix: Option<&str>, hash_files: bool) -> Result<Report> {
        let mut report = Report::default();
        let mut known_dirs = BTreeSet::new();
        let mut mailboxes = Vec::new();
        self.for_each_mailbox(prefix, |m| {
            if prefix.is_none_or(|p| m.name().starts_with(p)) {
                mailboxes.push(m);
            }
            Ok(())
        })?;
        for m in &mailboxes {
            if !m.is_real() {
                continue;
            }
            report.mailboxes += 1;
            let dir = self.mailbox_dir(m)?;
            known_dirs.insert(dir.clone());
            self.verify_mailbox(m, &dir, hash_files, &mut report)?;
        }
        if prefix.is_none() {
            self.find_orphan_dirs(&known_dirs, &mut report)?;
        }
        Ok(report)
    }

    fn verify_mailbox(
        &self,
        m: &Mailbox,
        dir: &std::path::Path,
        hash_files: bool,
        report: &mut Report,
    ) -> Result<()> {
        let name = m.name().to_owned();
        let mut crcs = SyncCrcs::new();
        let mut referenced = BTreeSet::new();
        let mut max_uid = 0;
        let mut max_modseq = 0;
        self.for_each_record(m.id, 0, |rec| {
            report.records += 1;
            let r = &rec.record;
            crcs.add(r);
            max_uid = max_uid.max(r.uid);
            max_modseq = max_modseq.max(r.modseq);
            let path = message_path(dir, r.uid);
            if rec.has_file {
                referenced.insert(path.clone());
                if !path.is_file() {
                    report.problems.push(Problem::MissingFile {
                        mailbox: name.clone(),
                        uid: r.uid,
                        path,
                    });
                } else if hash_files {
                    let (guid, size) = hash_file(&path)?;
                    report.bytes_hashed += size;
                    if guid != r.guid || size != u64::from(r.size) {
                        report.problems.push(Problem::BadFile {
                            mailbox: name.clone(),
                            uid: r.uid,
                            expected: format!("{} ({} bytes)", r.guid, r.size),
                            found: format!("{guid} ({size} bytes)"),
                        });
                    }
                }
            }
            Ok(())
        })?;
        let stored = (m.state.sync_crc, m.state.sync_crc_annot.unwrap_or(0));
        if stored != (crcs.basic, crcs.annot) {
            report.problems.push(Problem::Crc {
                mailbox: name.clone(),
                stored,
                computed: (crcs.basic, crcs.annot),
            });
        }
        if max_uid > m.state.last_uid || max_modseq > m.state.highestmodseq {
            report.problems.push(Problem::Counters {
                mailbox: name.clone(),
                detail: format!(
                    "records reach uid {max_uid} / modseq {max_modseq} but last_uid is {} and \
                     highestmodseq {}",
                    m.state.last_uid, m.state.highestmodseq
                ),
            });
        }
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if !referenced.contains(&path) {
                    report.leftovers.push(path);
                }
            }
        }
        Ok(())
    }

    fn find_orphan_dirs(&self, known: &BTreeSet<PathBuf>, report: &mut Report) -> Result<()> {
        for root in self.config.partitions.values() {
            let uuid = root.join("uuid");
            let Ok(level0) = fs::read_dir(&uuid) else {
                continue;
            };
            for a in level0.flatten() {
                let Ok(level1) = fs::read_dir(a.path()) else {
                    continue;
                };
                for b in level1.flatten() {
                    let Ok(level2) = fs::read_dir(b.path()) else {
                        continue;
                    };
                    for c in level2.flatten() {
                        let path = c.path();
                        if !known.contains(&path) {
                            let uniqueid = c.file_name().to_string_lossy().into_owned();
                            // A mailbox that exists but was skipped (placeholder) has no dir.
                            if mailbox_dir(root, &uniqueid) == path {
                                report.leftovers.push(path);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Repairs what `verify` reported: removes leftovers, stores recomputed CRCs and
    /// raises counters. Missing or damaged message files are reported, not invented:
    /// they need the message from a replica or backup (`sync_client` copy-back).
    ///
    /// On a live store, a file that was a leftover when `verify` looked may belong to
    /// a transaction that committed since. Leftovers are therefore removed under the
    /// write lock (no transaction is then between writing its files and committing)
    /// and each is checked against the index again first. A delivery's temporary file
    /// is written before its transaction starts, so a recent one is left alone.
    pub fn repair(&mut self, report: &Report) -> Result<usize> {
        let leftovers = &report.leftovers;
        let mut fixed = self.write(|txn| {
            let mut removed = 0;
            for path in leftovers {
                if referenced_now(txn, path)? || is_recent_delivery(path) {
                    continue;
                }
                let result = if path.is_dir() {
                    fs::remove_dir_all(path)
                } else {
                    fs::remove_file(path)
                };
                match result {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(path, e)),
                }
            }
            Ok(removed)
        })?;
        for problem in &report.problems {
            match problem {
                Problem::Crc { mailbox, .. } | Problem::Counters { mailbox, .. } => {
                    let name = mailbox.clone();
                    self.write(|txn| txn.recompute_mailbox(&name))?;
                    fixed += 1;
                }
                Problem::MissingFile { .. } | Problem::BadFile { .. } => {}
            }
        }
        Ok(fixed)
    }
}

/// How long a delivery's temporary file (`.deliver-*`) is presumed to be in use.
pub const DELIVERY_GRACE: Duration = Duration::from_secs(3600);

/// True when the index, as of this transaction, refers to `path`: the directory of a
/// live mailbox, or the file of a record that has one.
fn referenced_now(txn: &Txn<'_>, path: &Path) -> Result<bool> {
    let is_dir = path.is_dir();
    let (dir, uid) = if is_dir {
        (path, None)
    } else {
        let Some(uid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix('.'))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return Ok(false);
        };
        match path.parent() {
            Some(dir) => (dir, Some(uid)),
            None => return Ok(false),
        }
    };
    let Some(uniqueid) = dir.file_name().and_then(|n| n.to_str()) else {
        return Ok(false);
    };
    if validate_uniqueid(uniqueid).is_err() {
        return Ok(false);
    }
    let Some(m) = txn.mailbox_by_uniqueid(uniqueid)? else {
        return Ok(false);
    };
    if !m.is_real() || txn.mailbox_dir(&m).ok().as_deref() != Some(dir) {
        return Ok(false);
    }
    match uid {
        None => Ok(true),
        Some(uid) => Ok(txn.record(m.id, uid)?.is_some_and(|r| r.has_file)),
    }
}

fn is_recent_delivery(path: &Path) -> bool {
    let is_delivery = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".deliver-"));
    if !is_delivery {
        return false;
    }
    match fs::metadata(path).and_then(|m| m.modified()) {
        // A clock step can put the file in the future: still recent.
        Ok(mtime) => SystemTime::now()
            .duration_since(mtime)
            .map_or(true, |age| age < DELIVERY_GRACE),
        Err(_) => false,
    }
}
