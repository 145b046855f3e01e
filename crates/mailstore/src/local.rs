//! Changes as Cyrus's imapd and lmtpd make them on a master: each allocates uids and
//! modseqs as Cyrus does (one new modseq per mailbox per operation), keeps the CRCs
//! current through [`Txn::put_record`], and queues the sync_log record Cyrus writes
//! (spec §6.2), appended once the change is durable.

use std::io::Read;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use csync_protocol::mailbox::{MailboxState, Record, SystemFlags};
use csync_protocol::metadata::{QUOTA_UNLIMITED, Quota, SeenRecord};

use crate::config::{DeleteMode, ExpungeMode};
use crate::names::{validate_internal, validate_userid};
use crate::store::{Mailbox, Store};
use crate::txn::{FileSource, LogEntry, Txn};
use crate::{Result, StoreError, files};

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How a STORE changes flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

/// Flags to set on a delivered or stored message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub system: SystemFlags,
    pub user: Vec<String>,
}

impl Flags {
    /// Parses IMAP flag words (`\Seen`, `$Label1`, ...). `\Expunged` and `\Recent`
    /// cannot be set by hand.
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Flags> {
        let mut flags = Flags::default();
        for w in words {
            if let Some(sys) = SystemFlags::from_name(w.as_bytes()) {
                if sys == SystemFlags::EXPUNGED {
                    return Err(StoreError::Invalid("\\Expunged cannot be stored".into()));
                }
                flags.system.insert(sys);
            } else if w.starts_with('\\') {
                return Err(StoreError::Invalid(format!("unknown system flag {w}")));
            } else if w.is_empty()
                || !w.bytes().all(|b| {
                    b.is_ascii_graphic()
                        && !matches!(b, b'(' | b')' | b'{' | b'"' | b'\\' | b'%' | b'*' | b']')
                })
            {
                return Err(StoreError::Invalid(format!("{w:?} is not a valid flag")));
            } else if !flags.user.iter().any(|u| u.eq_ignore_ascii_case(w)) {
                flags.user.push(w.to_owned());
            }
        }
        Ok(flags)
    }
}

/// A new mailbox's uniqueid: a lowercase UUID, as Cyrus builds with libuuid make them.
pub fn new_uniqueid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Store {
    /// Creates a mailbox (IMAP CREATE). User mailboxes get the owner's full rights,
    /// shared ones `anyone lrs` unless an ACL is given.
    pub fn create_mailbox(
        &mut self,
        name: &str,
        partition: Option<&str>,
        acl: Option<&str>,
    ) -> Result<Mailbox> {
        validate_internal(name)?;
        let partition = partition
            .unwrap_or(&self.config.default_partition)
            .to_owned();
        self.config.partition_root(&partition)?;
        let owner = self.config.namespace.owner(name);
        let acl = match (acl, &owner) {
            (Some(a), _) => a.to_owned(),
            (None, Some(o)) => format!("{o}\tlrswipkxtecdan\t"),
            (None, None) => "anyone\tlrs\t".to_owned(),
        };
        let name = name.to_owned();
        let ns = self.config.namespace.clone();
        self.write(|txn| {
            // Like IMAP CREATE in Cyrus 3.6: missing parents become real mailboxes
            // first, so a replica never has to invent them (it would give them
            // uniqueids of its own).
            for parent in missing_parents(&ns, &name) {
                if txn.mailbox(&parent)?.is_some_and(|m| m.is_real()) {
                    continue;
                }
                let parent_owner = ns.owner(&parent);
                let parent_acl = match &parent_owner {
                    Some(o) => format!("{o}\tlrswipkxtecdan\t"),
                    None => acl.clone(),
                };
                create_one(txn, &parent, &partition, &parent_acl)?;
            }
            create_one(txn, &name, &partition, &acl)
        })
    }

    /// Renames a mailbox and everything below it (IMAP RENAME). Each renamed mailbox
    /// gets a new modseq as its folder modseq.
    pub fn rename_mailbox(&mut self, old: &str, new: &str, partition: Option<&str>) -> Result<()> {
        validate_internal(new)?;
        let old = old.to_owned();
        let new = new.to_owned();
        let partition = partition.map(str::to_owned);
        self.write(|txn| rename_tree(txn, &old, &new, partition.as_deref()))
    }

    /// Deletes a mailbox (IMAP DELETE): with `delete_mode: delayed` it is renamed to
    /// `DELETED.<name>.<HEX>`; otherwise it is removed at once and a tombstone stays.
    pub fn delete_mailbox(&mut self, name: &str) -> Result<()> {
        let mode = self.config.delete_mode;
        let name = name.to_owned();
        self.write(|txn| {
            let m = txn
                .mailbox(&name)?
                .filter(Mailbox::is_real)
                .ok_or_else(|| StoreError::NoSuchMailbox(name.clone()))?;
            match mode {
                DeleteMode::Delayed if !txn.config().namespace.is_deleted(&name) => {
                    // The same name deleted twice in one second would collide:
                    // take the next free timestamp.
                    let mut t = now();
                    let mut target = txn.config().namespace.deleted_name(&name, t);
                    while txn.mailbox(&target)?.is_some() {
                        t += 1;
                        target = txn.config().namespace.deleted_name(&name, t);
                    }
                    let partition = m.state.partition.clone();
                    rename_one(txn, &m, &target, &partition)
                }
                _ => {
                    txn.delete_mailbox(m.id, Some(m.state.highestmodseq + 1))?;
                    txn.log(LogEntry::Unmailbox(name.clone()));
                    Ok(())
                }
            }
        })
    }

    /// Delivers a message (LMTP / APPEND): the next uid, a new modseq, the GUID
    /// computed while the bytes are written. The same bytes already stored in the
    /// partition are hard-linked instead of kept twice.
    pub fn deliver(
        &mut self,
        name: &str,
        message: impl Read,
        flags: &Flags,
        internaldate: Option<u64>,
    ) -> Result<u32> {
        let m = self.real_mailbox(name)?;
        let dir = self.mailbox_dir(&m)?;
        files::create_dir_durable(&dir)?;
        let tmp = dir.join(format!(".deliver-{}-{}.tmp", std::process::id(), now()));
        let (guid, size) = files::write_message(&tmp, message)?;
        let size32 = u32::try_from(size)
            .map_err(|_| StoreError::Invalid(format!("message of {size} bytes is too big")))?;
        let existing = self.find_guid(&guid, &m.state.partition, None)?;
        let source: PathBuf = existing.unwrap_or_else(|| tmp.clone());
        let name = name.to_owned();
        let result = self.write(|txn| {
            let mut m = txn
                .mailbox(&name)?
                .filter(Mailbox::is_real)
                .ok_or_else(|| StoreError::NoSuchMailbox(name.clone()))?;
            let t = now();
            let uid = m.state.last_uid + 1;
            let modseq = m.state.highestmodseq + 1;
            let record = Record {
                uid,
                modseq,
                last_updated: t,
                system_flags: flags.system,
                user_flags: flags.user.clone(),
                internaldate: internaldate.unwrap_or(t),
                size: size32,
                guid,
                savedate: t,
                createdmodseq: modseq,
                ..Record::default()
            };
            txn.put_record(&m, &record, FileSource::Link(&source))?;
            m.state.last_uid = uid;
            m.state.highestmodseq = modseq;
            m.state.last_appenddate = t;
            txn.update_header(&m)?;
            txn.log(LogEntry::Append(name.clone()));
            Ok(uid)
        });
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// Changes flags on the given uids (IMAP STORE). Returns how many records changed.
    pub fn store_flags(
        &mut self,
        name: &str,
        uids: &[u32],
        op: FlagOp,
        flags: &Flags,
    ) -> Result<usize> {
        let name = name.to_owned();
        self.write(|txn| {
            let mut m = txn
                .mailbox(&name)?
                .filter(Mailbox::is_real)
                .ok_or_else(|| StoreError::NoSuchMailbox(name.clone()))?;
            let modseq = m.state.highestmodseq + 1;
            let t = now();
            let mut changed = 0;
            for &uid in uids {
                let Some(rec) = txn.record(m.id, uid)? else {
                    continue;
                };
                if rec.record.is_expunged() {
                    continue;
                }
                let mut r = rec.record.clone();
                apply_flags(&mut r, op, flags);
                if r.system_flags == rec.record.system_flags
                    && r.user_flags == rec.record.user_flags
                {
                    continue;
                }
                r.modseq = modseq;
                r.last_updated = t;
                txn.put_record(&m, &r, FileSource::Keep)?;
                changed += 1;
            }
            if changed > 0 {
                m.state.highestmodseq = modseq;
                txn.update_header(&m)?;
                txn.log(LogEntry::Mailbox(name.clone()));
            }
            Ok(changed)
        })
    }

    /// Expunges (IMAP EXPUNGE / UID EXPUNGE): the given uids, or every `\Deleted`
    /// message. The records stay with `\Expunged`; with `expunge_mode: immediate` their
    /// files go.
    pub fn expunge(&mut self, name: &str, uids: Option<&[u32]>) -> Result<usize> {
        let immediate = self.config.expunge_mode == ExpungeMode::Immediate;
        let name = name.to_owned();
        let mut targets: Vec<u32> = Vec::new();
        // Sorted once so a long uid list is not scanned for every record.
        let wanted_uids: Option<Vec<u32>> = uids.map(|list| {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted
        });
        {
            let m = self.real_mailbox(&name)?;
            self.for_each_record(m.id, 0, |rec| {
                let r = &rec.record;
                let wanted = match &wanted_uids {
                    Some(list) => list.binary_search(&r.uid).is_ok(),
                    None => r.system_flags.contains(SystemFlags::DELETED),
                };
                if wanted && !r.is_expunged() {
                    targets.push(r.uid);
                }
                Ok(())
            })?;
        }
        self.write(|txn| {
            let mut m = txn
                .mailbox(&name)?
                .filter(Mailbox::is_real)
                .ok_or_else(|| StoreError::NoSuchMailbox(name.clone()))?;
            if targets.is_empty() {
                return Ok(0);
            }
            let modseq = m.state.highestmodseq + 1;
            let t = now();
            let mut n = 0;
            for &uid in &targets {
                let Some(rec) = txn.record(m.id, uid)? else {
                    continue;
                };
                let mut r = rec.record;
                r.system_flags.insert(SystemFlags::EXPUNGED);
                r.modseq = modseq;
                r.last_updated = t;
                let file = if immediate {
                    FileSource::Remove
                } else {
                    FileSource::Keep
                };
                txn.put_record(&m, &r, file)?;
                n += 1;
            }
            m.state.highestmodseq = modseq;
            txn.update_header(&m)?;
            txn.log(LogEntry::Mailbox(name.clone()));
            Ok(n)
        })
    }

    /// Sets a user's seen state on a mailbox. For the owner this is the `\Seen` flag
    /// (a MAILBOX change); for anyone else a seen record (`SEEN user uniqueid`).
    pub fn set_seen(&mut self, userid: &str, name: &str, seen_uids: &[u32]) -> Result<()> {
        validate_userid(userid)?;
        let m = self.real_mailbox(name)?;
        if m.owner.as_deref() == Some(userid) || m.state.options.contains('S') {
            self.store_flags(
                name,
                seen_uids,
                FlagOp::Add,
                &Flags {
                    system: SystemFlags::SEEN,
                    user: Vec::new(),
                },
            )?;
            return Ok(());
        }
        let t = now();
        let record = SeenRecord {
            uniqueid: m.state.uniqueid.clone(),
            lastread: t,
            lastuid: m.state.last_uid,
            lastchange: t,
            seenuids: sequence_set(seen_uids),
        };
        let userid = userid.to_owned();
        self.write(|txn| {
            txn.set_seen(&userid, &record)?;
            txn.log(LogEntry::Seen(userid.clone(), record.uniqueid.clone()));
            Ok(())
        })
    }

    /// Subscribes or unsubscribes (both log `SUB user mailbox`, as Cyrus does).
    pub fn subscribe(&mut self, userid: &str, name: &str, subscribed: bool) -> Result<()> {
        let (userid, name) = (userid.to_owned(), name.to_owned());
        self.write(|txn| {
            txn.set_subscribed(&userid, &name, subscribed)?;
            txn.log(LogEntry::Sub(userid.clone(), name.clone()));
            Ok(())
        })
    }

    /// Sets quota limits on a root (`None` = unlimited) — SETQUOTA. Storage in KiB.
    pub fn set_quota(
        &mut self,
        root: &str,
        storage_kib: Option<u32>,
        messages: Option<u32>,
    ) -> Result<()> {
        let root = root.to_owned();
        self.write(|txn| {
            let modseq = txn.mailbox(&root)?.map(|m| m.state.highestmodseq);
            txn.set_quota(&Quota {
                root: root.clone(),
                limit: storage_kib.unwrap_or(QUOTA_UNLIMITED),
                storage: storage_kib,
                message: messages,
                annotation_storage: None,
                num_folders: None,
                modseq,
            })?;
            txn.log(LogEntry::Quota(root.clone()));
            Ok(())
        })
    }

    /// Removes a quota root.
    pub fn remove_quota(&mut self, root: &str) -> Result<()> {
        let root = root.to_owned();
        self.write(|txn| {
            if !txn.remove_quota(&root)? {
                return Err(StoreError::Invalid(format!("no quota root {root}")));
            }
            txn.log(LogEntry::Quota(root.clone()));
            Ok(())
        })
    }

    /// Sets (or with `None`, removes) one identifier's rights (SETACL / DELETEACL).
    pub fn set_acl(&mut self, name: &str, identifier: &str, rights: Option<&str>) -> Result<()> {
        if identifier.is_empty() || identifier.contains(['\t', '\r', '\n']) {
            return Err(StoreError::Invalid(format!(
                "bad ACL identifier {identifier:?}"
            )));
        }
        if let Some(r) = rights
            && !r.bytes().all(|b| b"lrswipkxtecdan0123456789".contains(&b))
        {
            return Err(StoreError::Invalid(format!("bad rights {r:?}")));
        }
        let (name, identifier, rights) = (
            name.to_owned(),
            identifier.to_owned(),
            rights.map(str::to_owned),
        );
        self.write(|txn| {
            let mut m = txn
                .mailbox(&name)?
                .filter(Mailbox::is_real)
                .ok_or_else(|| StoreError::NoSuchMailbox(name.clone()))?;
            let mut entries: Vec<(String, String)> = acl_entries(&m.state.acl);
            entries.retain(|(id, _)| id != &identifier);
            if let Some(r) = &rights {
                entries.push((identifier.clone(), r.clone()));
            }
            m.state.acl = entries
                .iter()
                .map(|(id, r)| format!("{id}\t{r}\t"))
                .collect();
            bump_folder(&mut m);
            txn.update_header(&m)?;
            txn.log(LogEntry::Mailbox(name.clone()));
            Ok(())
        })
    }

    /// Sets or removes a mailbox annotation (`name` empty: a server annotation).
    /// `entry` is without `/shared` or `/private` (`/comment`); `userid` empty for the
    /// shared value.
    pub fn set_annotation(
        &mut self,
        name: &str,
        entry: &str,
        userid: &str,
        value: Option<&[u8]>,
    ) -> Result<()> {
        if !entry.starts_with('/') || entry.contains(['\r', '\n', '\0']) {
            return Err(StoreError::Invalid(format!(
                "bad annotation entry {entry:?}"
            )));
        }
        let (name, entry, userid) = (name.to_owned(), entry.to_owned(), userid.to_owned());
        let value = value.map(<[u8]>::to_vec);
        self.write(|txn| {
            if name.is_empty() {
                txn.set_mailbox_annotation(0, &entry, &userid, value.as_deref().map(|v| (v, 0)))?;
                txn.log(LogEntry::Annotation(String::new()));
                return Ok(());
            }
            let mut m = txn
                .mailbox(&name)?
                .filter(Mailbox::is_real)
                .ok_or_else(|| StoreError::NoSuchMailbox(name.clone()))?;
            txn.set_mailbox_annotation(m.id, &entry, &userid, value.as_deref().map(|v| (v, 0)))?;
            bump_folder(&mut m);
            txn.update_header(&m)?;
            txn.log(LogEntry::Mailbox(name.clone()));
            Ok(())
        })
    }

    /// Stores a sieve script (by name, without `.script`); optionally activates it.
    pub fn put_sieve(
        &mut self,
        userid: &str,
        script: &str,
        content: &[u8],
        activate: bool,
    ) -> Result<()> {
        let (userid, script) = (userid.to_owned(), script.to_owned());
        let content = content.to_vec();
        self.write(|txn| {
            txn.put_sieve(&userid, &script, &content, now())?;
            if activate {
                txn.activate_sieve(&userid, Some(&script))?;
            }
            txn.log(LogEntry::Meta(userid.clone()));
            Ok(())
        })
    }

    /// Activates a script (`None`: deactivates all).
    pub fn activate_sieve(&mut self, userid: &str, script: Option<&str>) -> Result<()> {
        let (userid, script) = (userid.to_owned(), script.map(str::to_owned));
        self.write(|txn| {
            txn.activate_sieve(&userid, script.as_deref())?;
            txn.log(LogEntry::Meta(userid.clone()));
            Ok(())
        })
    }

    /// Deletes a sieve script.
    pub fn delete_sieve(&mut self, userid: &str, script: &str) -> Result<()> {
        let (userid, script) = (userid.to_owned(), script.to_owned());
        self.write(|txn| {
            if !txn.delete_sieve(&userid, &script)? {
                return Err(StoreError::Invalid(format!(
                    "no sieve script {script} for {userid}"
                )));
            }
            txn.log(LogEntry::Meta(userid.clone()));
            Ok(())
        })
    }

    /// Deletes a user: every mailbox (deepest first, INBOX last), seen state,
    /// subscriptions, sieve scripts and the user's quota root. Logs `UNUSER`.
    pub fn delete_user(&mut self, userid: &str) -> Result<()> {
        validate_userid(userid)?;
        let mailboxes = self.user_mailboxes(userid)?;
        if mailboxes.is_empty() {
            return Err(StoreError::NoSuchUser(userid.to_owned()));
        }
        let inbox = self.namespace().inbox(userid);
        let userid = userid.to_owned();
        self.write(|txn| {
            let mut names: Vec<&Mailbox> = mailboxes.iter().collect();
            names.sort_by_key(|m| std::cmp::Reverse(m.name().len()));
            for m in names {
                txn.delete_mailbox(m.id, None)?;
            }
            txn.purge_user_metadata(&userid)?;
            txn.remove_quota(&inbox)?;
            txn.log(LogEntry::Unuser(userid.clone()));
            Ok(())
        })
    }
}

fn apply_flags(r: &mut Record, op: FlagOp, flags: &Flags) {
    let expunged = r.system_flags.contains(SystemFlags::EXPUNGED);
    match op {
        FlagOp::Add => {
            r.system_flags.insert(flags.system);
            for u in &flags.user {
                if !r.user_flags.iter().any(|x| x.eq_ignore_ascii_case(u)) {
                    r.user_flags.push(u.clone());
                }
            }
        }
        FlagOp::Remove => {
            r.system_flags.remove(flags.system);
            r.user_flags
                .retain(|x| !flags.user.iter().any(|u| u.eq_ignore_ascii_case(x)));
        }
        FlagOp::Replace => {
            r.system_flags = flags.system;
            r.user_flags = flags.user.clone();
        }
    }
    if expunged {
        r.system_flags.insert(SystemFlags::EXPUNGED);
    }
}

fn bump_folder(m: &mut Mailbox) {
    m.state.highestmodseq += 1;
    m.state.foldermodseq = m.state.highestmodseq;
}

/// `identifier TAB rights TAB` pairs of an ACL string.
pub fn acl_entries(acl: &str) -> Vec<(String, String)> {
    let parts: Vec<&str> = acl.split('\t').collect();
    parts
        .chunks(2)
        .filter(|c| c.len() == 2 && !c[0].is_empty())
        .map(|c| (c[0].to_owned(), c[1].to_owned()))
        .collect()
}

/// `1:3,7` from a list of uids.
pub fn sequence_set(uids: &[u32]) -> String {
    let mut sorted: Vec<u32> = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    out.join(",")
}

fn rename_one(txn: &mut Txn<'_>, m: &Mailbox, new: &str, partition: &str) -> Result<()> {
    let old = m.name().to_owned();
    txn.rename_mailbox(m.id, new, partition)?;
    let mut renamed = txn.mailbox_by_id(m.id)?;
    bump_folder(&mut renamed);
    txn.update_header(&renamed)?;
    txn.log(LogEntry::Rename(old.clone(), new.to_owned()));
    txn.log(LogEntry::Mailbox(old));
    txn.log(LogEntry::Mailbox(new.to_owned()));
    Ok(())
}

fn rename_tree(txn: &mut Txn<'_>, old: &str, new: &str, partition: Option<&str>) -> Result<()> {
    let m = txn
        .mailbox(old)?
        .filter(Mailbox::is_real)
        .ok_or_else(|| StoreError::NoSuchMailbox(old.to_owned()))?;
    if txn.mailbox(new)?.is_some_and(|x| x.is_real()) {
        return Err(StoreError::MailboxExists(new.to_owned()));
    }
    // Children first collected, then renamed with the parent.
    let prefix = format!("{old}.");
    let mut children = Vec::new();
    {
        let all = txn.children_of(&prefix)?;
        for child in all {
            children.push(child);
        }
    }
    let part = partition.unwrap_or(&m.state.partition).to_owned();
    rename_one(txn, &m, new, &part)?;
    for child in children {
        let suffix = &child.name()[prefix.len()..];
        let target = format!("{new}.{suffix}");
        let child_part = partition.unwrap_or(&child.state.partition).to_owned();
        rename_one(txn, &child, &target, &child_part)?;
    }
    Ok(())
}

impl Txn<'_> {
    /// Real mailboxes whose names start with `prefix`.
    pub fn children_of(&self, prefix: &str) -> Result<Vec<Mailbox>> {
        let mut out = Vec::new();
        let names = self.names_with_prefix(prefix)?;
        for n in names {
            if let Some(m) = self.mailbox(&n)?
                && m.is_real()
            {
                out.push(m);
            }
        }
        Ok(out)
    }
}

/// The ancestors of `name` that a CREATE makes first (not the bare `user` level,
/// nor anything for `DELETED.` names), outermost first.
fn missing_parents(ns: &crate::names::Namespace, name: &str) -> Vec<String> {
    if ns.is_deleted(name) {
        return Vec::new();
    }
    let (domain, local) = crate::names::split_domain(name);
    let parts: Vec<&str> = local.split('.').collect();
    let mut out = Vec::new();
    for i in 1..parts.len() {
        if i == 1 && parts[0] == "user" {
            continue;
        }
        let prefix = parts[..i].join(".");
        out.push(match domain {
            Some(d) => format!("{d}!{prefix}"),
            None => prefix,
        });
    }
    out
}

fn create_one(txn: &mut Txn<'_>, name: &str, partition: &str, acl: &str) -> Result<Mailbox> {
    let quotaroot = txn.quota_root_for(name)?;
    let state = MailboxState {
        uniqueid: new_uniqueid(),
        mboxname: name.to_owned(),
        uidvalidity: now() as u32,
        partition: partition.to_owned(),
        acl: acl.to_owned(),
        options: "P".into(),
        quotaroot,
        createdmodseq: 1,
        foldermodseq: 1,
        ..MailboxState::default()
    };
    let mut m = txn.create_mailbox(&state)?;
    m.state.highestmodseq = 1;
    txn.update_header(&m)?;
    txn.log(LogEntry::Mailbox(name.to_owned()));
    txn.mailbox_by_id(m.id)
}
