//! `dump`: the store as the users see it over IMAP, in the `cyrus-test-dump/1` JSON of
//! `tests/cyrus/dump.py` (specified in `tests/cyrus/README.md`, "Dump format"), so
//! that `dump.py diff <cyrus instance> <this output>` compares a Cyrus server with a
//! csync store directly.
//!
//! Everything a user would see through Cyrus 3.6's imapd with `altnamespace: yes` and
//! `unixhierarchysep: yes` is derived here from the store the way Cyrus derives it:
//!
//! * names: `user.alice` → `INBOX`, `user.alice.A.B` → `A/B` (a `^` in a component is a
//!   `.`), another user's `user.bob.X` → `Other Users/bob/X`, shared `x.y` →
//!   `Shared Folders/x/y`; `#sieve` and `DELETED.*` mailboxes are never listed;
//! * visibility and rights: Cyrus's `cyrus_acl_myrights` (the user's entry plus
//!   `anyone`, minus negative entries) plus the owner's implicit rights
//!   (`implicit_owner_rights`, default `lkxan`); a mailbox is listed when the user's
//!   ACL rights (without the implicit ones) include `l` (mboxlist.c `find_p`); `acl`
//!   (GETACL, the ACL string as stored) when the user owns the mailbox or has `a`,
//!   else `myrights` (MYRIGHTS, printed by `cyrus_acl_masktostr`, which adds the
//!   legacy `c` and `d` macros);
//! * `\HasChildren` only for children with `l` for the user, a hidden `#sieve`
//!   mailbox included (imapd.c `list_cb` sees it before dropping it); never for INBOX;
//! * subscriptions: only those naming an existing mailbox (LSUB drops the others);
//! * `\Seen`: the record flag for the owner (and for everyone with `OPTIONS S`), the
//!   user's seen record otherwise;
//! * annotations: shared values as `/shared<entry>`, the user's own private values as
//!   `/private<entry>`, minus dump.py's `IGNORED_ANNOTATIONS`;
//! * quota: the nearest quota root at or above the mailbox; usage counts the
//!   non-expunged messages of every mailbox under that root, `#sieve` included and
//!   `DELETED.*` excluded, storage in KiB rounded down (Cyrus's GETQUOTA);
//! * `sha1` is computed from the message file (not copied from the index), so the
//!   dump compares the bytes.
//!
//! Sieve: Cyrus 3.6 keeps scripts as messages of the hidden `user.<u>.#sieve` mailbox
//! and dump.py reports `"sieve": null` unless that mailbox exists. A csync store holds
//! scripts either in its own table (what `csyncadm sieve` and the legacy `APPLY SIEVE`
//! write) or, when a Cyrus master replicated with SIEVE-MAILBOX, in such a `#sieve`
//! mailbox. The dump maps both:
//!
//! * `sieve` is `null` unless the user has a `#sieve` mailbox or at least one script in
//!   the table;
//! * `mailbox` (exists, uidnext, uidvalidity, highestmodseq, mailboxid) comes from a
//!   `#sieve` mailbox only. Table scripts have no mailbox, so for them it is left out:
//!   compare with `--ignore mailbox` (a Cyrus replica builds its own `#sieve` mailbox,
//!   with its own uniqueid and counters, when it receives `APPLY SIEVE`);
//! * `active` and `scripts` (name → SHA-1 of the script text) come from the table and
//!   from the `#sieve` messages (Subject = name, body = script, `\Flagged` = active);
//!   `--no-sieve` leaves them out, as dump.py's `--no-sieve` does.
//!
//! Known gaps (not modelled; see the README of tests/cyrus): a Cyrus replica counts
//! the messages of the `#sieve` mailbox it creates for table scripts in the user's
//! quota usage; `X-ANNOTATION-STORAGE` and `X-NUM-FOLDERS` are not reported; special-use
//! attributes come from the owner's `/specialuse` annotation; an intermediate entry
//! (type `i`) is reported to its owner as `\HasChildren \Noselect` (not checked
//! against Cyrus); a `#sieve` mailbox the Cyrus replica creates for table scripts
//! inherits the INBOX's ACL of that moment, which can give `Other Users/<u>`
//! `\HasChildren` there; virtual domains are not supported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};

use anyhow::{Context, Result};
use csync_mailstore::files::hash_file;
use csync_mailstore::local::acl_entries;
use csync_mailstore::{Mailbox, Namespace, Store};
use csync_protocol::mailbox::SystemFlags;
use serde_json::{Map, Value, json};

use crate::failure::doing_plain;
use crate::uidset::UidSet;

pub const FORMAT: &str = "cyrus-test-dump/1";

/// What to put in the dump (dump.py's options).
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Only these users (all users with an INBOX when empty).
    pub users: Vec<String>,
    /// Leave out `sha1` (no message file is read).
    pub no_bodies: bool,
    /// Leave out `active` and `scripts` of `sieve`.
    pub no_sieve: bool,
    /// Add `deleted`: the internal names of the `DELETED.*` mailboxes.
    pub deleted: bool,
}

/// Server-computed annotations dump.py leaves out (its `IGNORED_ANNOTATIONS`).
const IGNORED_ANNOTATIONS: [&str; 13] = [
    "uniqueid",
    "synccrcs",
    "size",
    "partition",
    "server",
    "lastupdate",
    "lastpop",
    "foldermodseq",
    "annotsize",
    "hasalarms",
    "pop3newuidl",
    "sharedseen",
    "duplicatedeliver",
];

fn ignored_annotation(entry: &str) -> bool {
    entry
        .strip_prefix("/vendor/cmu/cyrus-imapd/")
        .is_some_and(|name| IGNORED_ANNOTATIONS.contains(&name))
}

// ---------------------------------------------------------------------------------
// Rights, as lib/acl.c computes and prints them (deleteright "c", the default).

const ACL_LOOKUP: u32 = 1 << 0;
const ACL_READ: u32 = 1 << 1;
const ACL_SETSEEN: u32 = 1 << 2;
const ACL_WRITE: u32 = 1 << 3;
const ACL_INSERT: u32 = 1 << 4;
const ACL_POST: u32 = 1 << 5;
const ACL_CREATE: u32 = 1 << 6;
const ACL_DELETEMBOX: u32 = 1 << 7;
const ACL_DELETEMSG: u32 = 1 << 8;
const ACL_EXPUNGE: u32 = 1 << 9;
const ACL_ADMIN: u32 = 1 << 10;
const ACL_ANNOTATEMSG: u32 = 1 << 11;
const ACL_USER0: u32 = 1 << 12;

/// `cyrus_acl_strtomask`: letters to bits; the legacy `c` and `d` macros stand for
/// their member rights unless one of those is given too.
pub fn rights_mask(rights: &str) -> u32 {
    let mut result = 0;
    let mut legacy_create = 0;
    let mut legacy_delete = 0;
    for c in rights.chars() {
        match c {
            'l' => result |= ACL_LOOKUP,
            'r' => result |= ACL_READ,
            's' => result |= ACL_SETSEEN,
            'w' => result |= ACL_WRITE,
            'i' => result |= ACL_INSERT,
            'p' => result |= ACL_POST,
            'k' => result |= ACL_CREATE,
            'x' => result |= ACL_DELETEMBOX,
            't' => result |= ACL_DELETEMSG,
            'e' => result |= ACL_EXPUNGE,
            'a' => result |= ACL_ADMIN,
            'n' => result |= ACL_ANNOTATEMSG,
            'c' => legacy_create = ACL_CREATE | ACL_DELETEMBOX,
            'd' => legacy_delete = ACL_DELETEMSG | ACL_EXPUNGE,
            '0'..='9' => result |= ACL_USER0 << (c as u32 - '0' as u32),
            _ => {}
        }
    }
    if result & legacy_create == 0 {
        result |= legacy_create;
    }
    if result & legacy_delete == 0 {
        result |= legacy_delete;
    }
    result
}

/// `cyrus_acl_masktostr`.
pub fn rights_string(mask: u32) -> String {
    let mut out = String::new();
    for (bit, c) in [
        (ACL_LOOKUP, 'l'),
        (ACL_READ, 'r'),
        (ACL_SETSEEN, 's'),
        (ACL_WRITE, 'w'),
        (ACL_INSERT, 'i'),
        (ACL_POST, 'p'),
        (ACL_CREATE, 'k'),
        (ACL_DELETEMBOX, 'x'),
        (ACL_DELETEMSG, 't'),
        (ACL_EXPUNGE, 'e'),
    ] {
        if mask & bit != 0 {
            out.push(c);
        }
    }
    if mask & (ACL_CREATE | ACL_DELETEMBOX) != 0 {
        out.push('c');
    }
    if mask & (ACL_DELETEMSG | ACL_EXPUNGE) != 0 {
        out.push('d');
    }
    if mask & ACL_ADMIN != 0 {
        out.push('a');
    }
    if mask & ACL_ANNOTATEMSG != 0 {
        out.push('n');
    }
    for i in 0..10u32 {
        if mask & (ACL_USER0 << i) != 0 {
            out.push(char::from(b'0' + i as u8));
        }
    }
    out
}

/// `cyrus_acl_myrights` for `user`, plus the owner's implicit rights.
pub fn my_rights(acl: &str, user: &str, owner: bool) -> u32 {
    let mut positive = 0;
    let mut negative = 0;
    let applies = |id: &str| id == user || id == "anyone";
    for (id, rights) in acl_entries(acl) {
        match id.strip_prefix('-') {
            Some(id) if applies(id) => negative |= rights_mask(&rights),
            Some(_) => {}
            None if applies(&id) => positive |= rights_mask(&rights),
            None => {}
        }
    }
    let mut rights = positive & !negative;
    if owner {
        rights |= rights_mask("lkxan");
    }
    rights
}

// ---------------------------------------------------------------------------------
// Names

/// The name `user` sees for an internal name, or `None` for names that are never
/// listed (`DELETED.*`, virtual domains).
pub fn view_name(ns: &Namespace, user: &str, internal: &str) -> Option<String> {
    if internal.contains('!') || ns.is_deleted(internal) {
        return None;
    }
    let parts: Vec<String> = internal.split('.').map(|c| c.replace('^', ".")).collect();
    if parts.len() >= 2 && parts[0] == "user" {
        if parts[1] == user {
            return Some(if parts.len() == 2 {
                "INBOX".to_owned()
            } else {
                parts[2..].join("/")
            });
        }
        return Some(format!("Other Users/{}", parts[1..].join("/")));
    }
    Some(format!("Shared Folders/{}", parts.join("/")))
}

fn is_sieve_mailbox(m: &Mailbox) -> bool {
    m.state
        .mboxtype
        .as_deref()
        .is_some_and(|t| t.starts_with('f'))
}

fn flag_names(flags: SystemFlags) -> Vec<String> {
    SystemFlags::ALL
        .iter()
        .filter(|(f, _)| *f != SystemFlags::EXPUNGED && flags.contains(*f))
        .map(|(_, n)| (*n).to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------
// The store, read once

/// Everything the per-user views are computed from.
struct Snapshot {
    ns: Namespace,
    /// Real (message-holding) mailboxes, `#sieve` and `DELETED.*` included.
    real: Vec<Mailbox>,
    /// Intermediate entries (type `i`).
    intermediates: Vec<Mailbox>,
    deleted: Vec<String>,
    quota_roots: Vec<String>,
    real_names: BTreeSet<String>,
}

impl Snapshot {
    fn read(store: &Store) -> Result<Snapshot> {
        let ns = store.namespace().clone();
        let mut real = Vec::new();
        let mut intermediates = Vec::new();
        let mut deleted = Vec::new();
        store.for_each_mailbox(None, |m| {
            if m.is_tombstone() {
                return Ok(());
            }
            if m.is_intermediate() {
                intermediates.push(m);
                return Ok(());
            }
            if ns.is_deleted(m.name()) {
                deleted.push(m.name().to_owned());
            }
            real.push(m);
            Ok(())
        })?;
        Ok(Snapshot {
            ns,
            real_names: real.iter().map(|m| m.name().to_owned()).collect(),
            real,
            intermediates,
            deleted,
            quota_roots: store.quota_roots()?,
        })
    }

    /// The quota root governing `name`: the longest root equal to it or above it.
    fn quota_root(&self, name: &str) -> Option<&str> {
        self.quota_roots
            .iter()
            .filter(|r| {
                name == r.as_str()
                    || name
                        .strip_prefix(r.as_str())
                        .is_some_and(|s| s.starts_with('.'))
            })
            .max_by_key(|r| r.len())
            .map(String::as_str)
    }
}

/// Usage of every quota root: (bytes, messages).
fn quota_usage(store: &Store, snap: &Snapshot) -> Result<HashMap<String, (u64, u64)>> {
    let mut usage: HashMap<String, (u64, u64)> = HashMap::new();
    for m in &snap.real {
        if snap.ns.is_deleted(m.name()) {
            continue;
        }
        let Some(root) = snap.quota_root(m.name()) else {
            continue;
        };
        let entry = usage.entry(root.to_owned()).or_default();
        store.for_each_record(m.id, 0, |rec| {
            if !rec.record.is_expunged() {
                entry.0 += u64::from(rec.record.size);
                entry.1 += 1;
            }
            Ok(())
        })?;
    }
    Ok(usage)
}

/// One mailbox as one user sees it in LIST.
struct Listed<'a> {
    m: &'a Mailbox,
    view: String,
    rights: u32,
    owner: bool,
}

/// The whole dump as a JSON value.
pub fn dump(store: &Store, opts: &Options) -> Result<Value> {
    let snap = Snapshot::read(store).with_context(|| doing_plain("cannot read the store"))?;
    let usage = quota_usage(store, &snap)?;
    let users: Vec<String> = if opts.users.is_empty() {
        let mut all: BTreeSet<String> = BTreeSet::new();
        for m in &snap.real {
            if let Some(owner) = snap.ns.owner(m.name())
                && !snap.ns.is_deleted(m.name())
                && snap.ns.inbox(&owner) == m.name()
            {
                all.insert(owner);
            }
        }
        all.into_iter().collect()
    } else {
        opts.users.clone()
    };
    let mut out = Map::new();
    for user in &users {
        out.insert(user.clone(), user_view(store, &snap, &usage, user, opts)?);
    }
    let mut top = Map::new();
    top.insert("format".into(), json!(FORMAT));
    top.insert("users".into(), Value::Object(out));
    if opts.deleted {
        let mut deleted = snap.deleted.clone();
        deleted.sort();
        top.insert("deleted".into(), json!(deleted));
    }
    Ok(Value::Object(top))
}

fn user_view(
    store: &Store,
    snap: &Snapshot,
    usage: &HashMap<String, (u64, u64)>,
    user: &str,
    opts: &Options,
) -> Result<Value> {
    let ns = &snap.ns;
    let mut listed: Vec<Listed<'_>> = Vec::new();
    // Names LIST passes over without showing (`#sieve`): they still give their
    // parent \HasChildren, as in Cyrus's list_cb.
    let mut hidden: Vec<String> = Vec::new();
    for m in &snap.real {
        let Some(view) = view_name(ns, user, m.name()) else {
            continue;
        };
        // Visibility is the ACL's `l` alone (mboxlist.c find_p), without the owner's
        // implicit rights.
        if my_rights(&m.state.acl, user, false) & ACL_LOOKUP == 0 {
            continue;
        }
        if is_sieve_mailbox(m) {
            hidden.push(view);
            continue;
        }
        let owner = ns.owner(m.name()).as_deref() == Some(user);
        listed.push(Listed {
            m,
            view,
            rights: my_rights(&m.state.acl, user, owner),
            owner,
        });
    }
    // Only the owner sees intermediates (find_p), and only those with children.
    let mut noselect: Vec<String> = Vec::new();
    for m in &snap.intermediates {
        if ns.owner(m.name()).as_deref() != Some(user) {
            continue;
        }
        if let Some(view) = view_name(ns, user, m.name()) {
            let prefix = format!("{view}/");
            if listed.iter().any(|l| l.view.starts_with(&prefix)) {
                noselect.push(view);
            }
        }
    }
    let views: Vec<String> = listed
        .iter()
        .map(|l| l.view.clone())
        .chain(noselect.iter().cloned())
        .chain(hidden)
        .collect();
    let children = |view: &str| {
        let prefix = format!("{view}/");
        views.iter().any(|v| v.starts_with(&prefix))
    };
    let seen: HashMap<String, String> = store
        .seen(user)?
        .into_iter()
        .map(|s| (s.uniqueid, s.seenuids))
        .collect();
    let mut mailboxes = Map::new();
    let mut quota = Map::new();
    for view in &noselect {
        let mut attrs = vec![
            if children(view) {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            }
            .to_owned(),
            "\\Noselect".to_owned(),
        ];
        attrs.sort();
        mailboxes.insert(view.clone(), json!({"list": attrs, "noselect": true}));
    }
    for l in &listed {
        let (mb, root) = mailbox_view(store, snap, l, user, &seen, children(&l.view), opts)?;
        if let Some(root) = root
            && let Some(q) = store.quota(&root)?
            && let Some(root_view) = view_name(ns, user, &root)
        {
            let (bytes, messages) = usage.get(&root).copied().unwrap_or_default();
            let mut resources = Map::new();
            if let Some(limit) = q.storage_limit() {
                resources.insert("STORAGE".into(), json!([bytes / 1024, limit]));
            }
            if let Some(limit) = q.message {
                resources.insert("MESSAGE".into(), json!([messages, limit]));
            }
            quota.insert(root_view, Value::Object(resources));
        }
        mailboxes.insert(l.view.clone(), mb);
    }
    // LSUB leaves out subscriptions to mailboxes that do not exist (imapd.c
    // subscribed_cb: \NonExistent entries are dropped); it does not check rights.
    let mut subscriptions: Vec<String> = store
        .subscriptions(user)?
        .iter()
        .filter(|name| snap.real_names.contains(name.as_str()))
        .filter_map(|name| view_name(ns, user, name))
        .collect();
    subscriptions.sort();
    subscriptions.dedup();
    Ok(json!({
        "mailboxes": Value::Object(mailboxes),
        "subscriptions": subscriptions,
        "quota": Value::Object(quota),
        "sieve": sieve_view(store, snap, user, opts)?,
    }))
}

/// One listed mailbox, and its quota root (internal name).
fn mailbox_view(
    store: &Store,
    snap: &Snapshot,
    l: &Listed<'_>,
    user: &str,
    seen: &HashMap<String, String>,
    has_children: bool,
    opts: &Options,
) -> Result<(Value, Option<String>)> {
    let m = l.m;
    let ns = &snap.ns;
    let mut list = vec![
        if has_children {
            "\\HasChildren"
        } else {
            "\\HasNoChildren"
        }
        .to_owned(),
    ];
    let annotations = store.mailbox_annotations(m.id)?;
    let mut shown = Map::new();
    for a in &annotations {
        if a.value.is_empty() || ignored_annotation(&a.entry) {
            continue;
        }
        let key = if a.userid.is_empty() {
            format!("/shared{}", a.entry)
        } else if a.userid == user {
            format!("/private{}", a.entry)
        } else {
            continue;
        };
        if l.owner && a.userid == user && a.entry == "/specialuse" {
            list.extend(
                String::from_utf8_lossy(&a.value)
                    .split_whitespace()
                    .map(str::to_owned),
            );
        }
        shown.insert(key, json!(String::from_utf8_lossy(&a.value)));
    }
    list.sort();
    list.dedup();
    // \Seen of someone who is not the owner lives in their seen record.
    let own_seen = l.owner || m.state.options.contains('S');
    let seen_set = if own_seen {
        None
    } else {
        let text = seen
            .get(&m.state.uniqueid)
            .map(String::as_str)
            .unwrap_or("");
        Some(if text.is_empty() {
            None
        } else {
            Some(
                UidSet::parse(text)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("seen state of {user} on {}", m.name()))?
                    .resolve(m.state.last_uid),
            )
        })
    };
    let dir = store.mailbox_dir(m)?;
    let mut messages = Vec::new();
    let mut failure = None;
    store.for_each_record(m.id, 0, |rec| {
        let r = &rec.record;
        if r.is_expunged() || failure.is_some() {
            return Ok(());
        }
        let mut flags = flag_names(r.system_flags);
        if let Some(set) = &seen_set {
            flags.retain(|f| f != "\\Seen");
            if set.as_ref().is_some_and(|s| s.contains(r.uid)) {
                flags.push("\\Seen".to_owned());
            }
        }
        flags.extend(r.user_flags.iter().cloned());
        flags.sort();
        let mut msg = Map::new();
        msg.insert("uid".into(), json!(r.uid));
        msg.insert("flags".into(), json!(flags));
        msg.insert("internaldate".into(), json!(r.internaldate));
        msg.insert("size".into(), json!(r.size));
        msg.insert("modseq".into(), json!(r.modseq));
        if !opts.no_bodies {
            let path = csync_mailstore::files::message_path(&dir, r.uid);
            match hash_file(&path) {
                Ok((guid, _)) => {
                    msg.insert("sha1".into(), json!(guid.to_string()));
                }
                Err(e) => failure = Some(anyhow::Error::new(e)),
            }
        }
        messages.push(Value::Object(msg));
        Ok(())
    })?;
    if let Some(e) = failure {
        return Err(e.context(format!("reading the messages of {}", m.name())));
    }
    let mut mb = Map::new();
    mb.insert("list".into(), json!(list));
    mb.insert("exists".into(), json!(messages.len()));
    mb.insert("uidvalidity".into(), json!(m.state.uidvalidity));
    mb.insert("uidnext".into(), json!(u64::from(m.state.last_uid) + 1));
    mb.insert("highestmodseq".into(), json!(m.state.highestmodseq));
    mb.insert("mailboxid".into(), json!(m.state.uniqueid));
    if l.owner || l.rights & ACL_ADMIN != 0 {
        let acl: Map<String, Value> = acl_entries(&m.state.acl)
            .into_iter()
            .map(|(id, rights)| (id, json!(rights)))
            .collect();
        mb.insert("acl".into(), Value::Object(acl));
    } else {
        mb.insert("myrights".into(), json!(rights_string(l.rights)));
    }
    mb.insert("annotations".into(), Value::Object(shown));
    let root = snap.quota_root(m.name()).map(str::to_owned);
    let roots: Vec<String> = root
        .iter()
        .filter(|r| store.quota(r).ok().flatten().is_some())
        .filter_map(|r| view_name(ns, user, r))
        .collect();
    mb.insert("quotaroots".into(), json!(roots));
    mb.insert("messages".into(), Value::Array(messages));
    Ok((Value::Object(mb), root))
}

/// `sieve`: see the module documentation for how csync's scripts map onto it.
fn sieve_view(store: &Store, snap: &Snapshot, user: &str, opts: &Options) -> Result<Value> {
    let inbox = snap.ns.inbox(user);
    let sieve_box = snap.real.iter().find(|m| {
        is_sieve_mailbox(m)
            && snap.ns.owner(m.name()).as_deref() == Some(user)
            && m.name().starts_with(&inbox)
    });
    let entries = store.sieve_entries(user)?;
    let mut scripts: BTreeMap<String, String> = BTreeMap::new();
    let mut active: Option<String> = None;
    for e in &entries {
        if let Some(name) = e.filename.strip_suffix(".script") {
            let sha1 = e.guid.map(|g| g.to_string()).unwrap_or_default();
            scripts.insert(name.to_owned(), sha1);
        } else if let Some(name) = e.filename.strip_suffix(".bc")
            && e.is_active == Some(true)
        {
            active = Some(name.to_owned());
        }
    }
    if sieve_box.is_none() && scripts.is_empty() {
        return Ok(Value::Null);
    }
    let mut out = Map::new();
    if let Some(m) = sieve_box {
        let mut exists = 0u64;
        let dir = store.mailbox_dir(m)?;
        let mut failure = None;
        store.for_each_record(m.id, 0, |rec| {
            if rec.record.is_expunged() || failure.is_some() {
                return Ok(());
            }
            exists += 1;
            let path = csync_mailstore::files::message_path(&dir, rec.record.uid);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    if let Some((name, body)) = sieve_message(&bytes) {
                        let (guid, _) = csync_mailstore::files::hash_reader(body)
                            .map_err(|e| csync_mailstore::StoreError::Invalid(e.to_string()))?;
                        if rec.record.system_flags.contains(SystemFlags::FLAGGED) {
                            active = Some(name.clone());
                        }
                        scripts.insert(name, guid.to_string());
                    }
                }
                Err(e) => failure = Some(anyhow::anyhow!("{}: {e}", path.display())),
            }
            Ok(())
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        out.insert(
            "mailbox".into(),
            json!({
                "exists": exists,
                "uidnext": u64::from(m.state.last_uid) + 1,
                "uidvalidity": m.state.uidvalidity,
                "highestmodseq": m.state.highestmodseq,
                "mailboxid": m.state.uniqueid,
            }),
        );
    }
    if !opts.no_sieve {
        out.insert("active".into(), json!(active));
        out.insert("scripts".into(), json!(scripts));
    }
    Ok(Value::Object(out))
}

/// A `#sieve` message (Cyrus 3.6's format): the script name is the Subject, the
/// script the body.
fn sieve_message(bytes: &[u8]) -> Option<(String, &[u8])> {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let (head, body) = (&bytes[..split], &bytes[split + 4..]);
    let head = String::from_utf8_lossy(head);
    let name = head.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case("subject")
            .then(|| value.trim().to_owned())
    })?;
    Some((name, body))
}

/// Writes the dump as pretty JSON (keys sorted).
pub fn write(store: &Store, opts: &Options, out: &mut dyn Write) -> Result<()> {
    let value = dump(store, opts)?;
    serde_json::to_writer_pretty(&mut *out, &value).map_err(io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_round_trip_like_cyrus() {
        assert_eq!(
            rights_string(rights_mask("lrswipkxtecdan")),
            "lrswipkxtecdan"
        );
        assert_eq!(rights_string(rights_mask("lrs")), "lrs");
        // The legacy macros: c = k x, d = t e; printed whenever a member is there.
        assert_eq!(rights_string(rights_mask("lrc")), "lrkxc");
        assert_eq!(rights_string(rights_mask("lrd")), "lrted");
        assert_eq!(rights_string(rights_mask("lrk")), "lrkc");
        assert_eq!(rights_string(rights_mask("lr0")), "lr0");
    }

    #[test]
    fn my_rights_add_anyone_subtract_negative_and_imply_owner() {
        let acl = "alice\tlrswipkxtecdan\tbob\tlrsw\tanyone\tp\t-bob\tw\t";
        assert_eq!(rights_string(my_rights(acl, "bob", false)), "lrsp");
        assert_eq!(rights_string(my_rights(acl, "carol", false)), "p");
        assert_eq!(rights_string(my_rights("", "alice", true)), "lkxcan");
    }

    #[test]
    fn names_as_users_see_them() {
        let ns = Namespace {
            unixhierarchysep: true,
            ..Namespace::default()
        };
        assert_eq!(view_name(&ns, "alice", "user.alice").unwrap(), "INBOX");
        assert_eq!(
            view_name(&ns, "alice", "user.alice.A.B^C").unwrap(),
            "A/B.C"
        );
        assert_eq!(
            view_name(&ns, "bob", "user.alice.Work").unwrap(),
            "Other Users/alice/Work"
        );
        assert_eq!(
            view_name(&ns, "bob", "user.alice").unwrap(),
            "Other Users/alice"
        );
        assert_eq!(
            view_name(&ns, "bob", "shared.lists").unwrap(),
            "Shared Folders/shared/lists"
        );
        assert_eq!(
            view_name(&ns, "alice", "DELETED.user.alice.X.6B0218D3"),
            None
        );
    }

    #[test]
    fn sieve_messages_parse() {
        let msg =
            b"From: <a@b>\r\nSubject: main\r\nContent-Type: application/sieve\r\n\r\nkeep;\r\n";
        let (name, body) = sieve_message(msg).unwrap();
        assert_eq!(name, "main");
        assert_eq!(body, b"keep;\r\n");
    }
}
