//! `sync_client --verify`: has the replica converged? A read-only pass over the same
//! state a sync compares (spec §4.2–§4.8, §4.13), printing one line per user-level item
//! and per mailbox:
//!
//! ```text
//! OK alice user.alice
//! DIFF alice user.alice.Work: last_uid local=7 replica=6
//! OK alice (quota user.alice)
//! ```
//!
//! Only `GET USER` / `GET MAILBOXES` are sent (plus the session's COMPRESS, the
//! SIEVE-MAILBOX negotiation a sync would make, and EXIT), and the local store is
//! only read. What is compared:
//!
//! * the mailbox lists, matched by uniqueid: missing on the replica, only on the
//!   replica, name or partition different;
//! * every header field of the unchanged check ([`mailbox_differences`]), and both
//!   CRCs twice: the master's stored values and values recomputed from its records
//!   (`sync_crc(recomputed)`, `sync_crc_annot(recomputed)`), zero being a wildcard;
//! * quota roots and their limits, subscriptions, the user's seen records (each must
//!   be on the replica as it is here; extra replica records are not a difference, a
//!   sync never removes them) and sieve scripts (with SIEVE-MAILBOX off; with it on,
//!   the `#sieve` mailbox is compared as a mailbox).
//!
//! Users that exist only on the replica are not looked for (a sync never removes
//! them either; only rolling UNUSER records do).

use std::collections::{BTreeSet, HashMap};
use std::io::Write;

use csync_mailstore::{Mailbox, Store};
use csync_protocol::command::{Command, GetCommand};
use csync_protocol::crc::{SyncCrcs, crc_matches};
use csync_protocol::mailbox::MailboxState;
use csync_protocol::metadata::SieveEntry;
use csync_protocol::response::SyncStatus;

use crate::conn::Connection;
use crate::sync::{
    FieldDiff, ReplicaUser, SyncError, SyncOptions, SyncResult, is_sieve_mailbox,
    mailbox_differences, same_limits,
};

/// What to verify (the sync_client modes).
#[derive(Clone, Debug)]
pub enum Scope {
    /// `-u`: these users.
    Users(Vec<String>),
    /// `-m`: these mailboxes (internal names).
    Mailboxes(Vec<String>),
    /// `-A`: every user, then every shared mailboxes, optionally from a prefix on.
    All(Option<String>),
}

/// Counts of a verify pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lines printed (users' items and mailboxes).
    pub checked: u64,
    /// Of those, `DIFF` lines.
    pub differing: u64,
}

impl Summary {
    pub fn converged(&self) -> bool {
        self.differing == 0
    }
}

/// The read-only comparison of a store with a replica.
pub struct Verifier<'a> {
    pub store: &'a Store,
    pub conn: &'a mut Connection,
    pub opts: &'a SyncOptions,
    pub out: &'a mut dyn Write,
    pub summary: Summary,
}

impl std::fmt::Debug for Verifier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("conn", &self.conn)
            .field("summary", &self.summary)
            .finish()
    }
}

fn diff(field: &'static str, local: impl ToString, replica: impl ToString) -> FieldDiff {
    FieldDiff {
        field,
        local: local.to_string(),
        replica: replica.to_string(),
    }
}

impl Verifier<'_> {
    /// Runs over `scope`; a failing user or mailbox is reported (and counted as a
    /// difference) and the pass goes on, unless the connection is gone.
    pub fn run(&mut self, scope: &Scope) -> SyncResult<Summary> {
        match scope {
            Scope::Users(users) => {
                for u in users {
                    self.user_or_report(u)?;
                }
            }
            Scope::Mailboxes(names) => self.mailboxes("-", names)?,
            Scope::All(prefix) => {
                let (users, shared) = all_work(self.store, prefix.as_deref())?;
                for u in &users {
                    self.user_or_report(u)?;
                }
                for name in &shared {
                    self.mailboxes("-", std::slice::from_ref(name))?;
                }
            }
        }
        Ok(self.summary)
    }

    fn user_or_report(&mut self, userid: &str) -> SyncResult<()> {
        match self.user(userid) {
            Err(e) if !e.is_connection() => {
                self.line(userid, "-", &[diff("error", e, "-")])?;
                Ok(())
            }
            other => other,
        }
    }

    /// Prints `OK <user> <what>` or `DIFF <user> <what>: <field> local=.. replica=..`
    /// (one line per differing field).
    fn line(&mut self, user: &str, what: &str, diffs: &[FieldDiff]) -> SyncResult<()> {
        self.summary.checked += 1;
        let io = |e: std::io::Error| SyncError::Conn(e.into());
        if diffs.is_empty() {
            writeln!(self.out, "OK {user} {what}").map_err(io)?;
        } else {
            self.summary.differing += 1;
            for d in diffs {
                writeln!(self.out, "DIFF {user} {what}: {d}").map_err(io)?;
            }
        }
        Ok(())
    }

    fn get(&mut self, command: GetCommand, what: &str) -> SyncResult<Option<ReplicaUser>> {
        let name = match &command {
            GetCommand::User(_) => "GET USER",
            GetCommand::Mailboxes(_) => "GET MAILBOXES",
            _ => "GET",
        };
        let reply = self.conn.command(&Command::Get(command))?;
        match reply.status() {
            SyncStatus::Ok => Ok(Some(ReplicaUser::from_reply(reply))),
            SyncStatus::MailboxNonexistent => Ok(None),
            status => Err(SyncError::Replica {
                command: name.to_owned(),
                target: what.to_owned(),
                status,
                reply: reply.text(),
            }),
        }
    }

    /// One user: the mailbox list and every mailbox, quotas, subscriptions, seen,
    /// sieve.
    pub fn user(&mut self, userid: &str) -> SyncResult<()> {
        let replica = self
            .get(GetCommand::User(userid.to_owned()), userid)?
            .unwrap_or_default();
        let inbox = self.store.namespace().inbox(userid);
        if self
            .store
            .mailbox(&inbox)?
            .filter(Mailbox::is_real)
            .is_none()
        {
            // A sync skips such a user (§4.2 step 3); the replica should not have one.
            let diffs: Vec<FieldDiff> = if replica.mailboxes.is_empty() {
                Vec::new()
            } else {
                vec![diff(
                    "user",
                    "no INBOX",
                    format!("{} mailboxes", replica.mailboxes.len()),
                )]
            };
            return self.line(userid, &inbox, &diffs);
        }
        let sieve_mailbox = self.conn.sieve_mailbox;
        let local: Vec<Mailbox> = self
            .store
            .user_mailboxes(userid)?
            .into_iter()
            .filter(|m| !m.is_tombstone() && (sieve_mailbox || !is_sieve_mailbox(m)))
            .collect();
        self.compare_mailboxes(userid, &local, &replica.mailboxes, true)?;
        self.quotas(userid, &inbox, &local, &replica)?;
        self.subscriptions(userid, &replica.lsub)?;
        self.seen(userid, &replica)?;
        if !sieve_mailbox {
            self.sieve(userid, &replica.sieve)?;
        }
        Ok(())
    }

    /// Named mailboxes (`-m`, and the shared mailboxes of `-A`).
    pub fn mailboxes(&mut self, user: &str, names: &[String]) -> SyncResult<()> {
        let replica = self
            .get(GetCommand::Mailboxes(names.to_vec()), &names.join(" "))?
            .unwrap_or_default();
        let mut local = Vec::new();
        for name in names {
            match self.store.mailbox(name)? {
                Some(m) if !m.is_tombstone() => {
                    if is_sieve_mailbox(&m) && !self.conn.sieve_mailbox {
                        continue;
                    }
                    local.push(m);
                }
                _ => {}
            }
        }
        self.compare_mailboxes(user, &local, &replica.mailboxes, true)
    }

    fn compare_mailboxes(
        &mut self,
        user: &str,
        local: &[Mailbox],
        replica: &[MailboxState],
        report_extra: bool,
    ) -> SyncResult<()> {
        let by_uniqueid: HashMap<&str, &MailboxState> =
            replica.iter().map(|r| (r.uniqueid.as_str(), r)).collect();
        for m in local {
            let diffs = match by_uniqueid.get(m.state.uniqueid.as_str()) {
                None => vec![diff("mailbox", "present", "missing")],
                Some(r) => self.mailbox_diffs(m, r)?,
            };
            self.line(user, m.name(), &diffs)?;
        }
        if report_extra {
            let local_ids: BTreeSet<&str> =
                local.iter().map(|m| m.state.uniqueid.as_str()).collect();
            for r in replica {
                if !local_ids.contains(r.uniqueid.as_str()) {
                    self.line(user, &r.mboxname, &[diff("mailbox", "missing", "present")])?;
                }
            }
        }
        Ok(())
    }

    /// Everything about one mailbox that a sync would still change.
    fn mailbox_diffs(&self, m: &Mailbox, r: &MailboxState) -> SyncResult<Vec<FieldDiff>> {
        let mut diffs = Vec::new();
        if r.mboxname != m.state.mboxname {
            diffs.push(diff("mboxname", &m.state.mboxname, &r.mboxname));
        }
        let partition = self
            .opts
            .partition
            .clone()
            .unwrap_or_else(|| m.state.partition.clone());
        if m.is_real() && !r.partition.is_empty() && r.partition != partition {
            diffs.push(diff("partition", partition, &r.partition));
        }
        if !m.is_real() {
            // An intermediate is a name only (§4.5).
            if m.state.mboxtype != r.mboxtype {
                diffs.push(diff(
                    "mboxtype",
                    m.state.mboxtype.as_deref().unwrap_or("e"),
                    r.mboxtype.as_deref().unwrap_or("e"),
                ));
            }
            return Ok(diffs);
        }
        diffs.extend(mailbox_differences(&m.state, r));
        let mut crcs = SyncCrcs::new();
        self.store.for_each_record(m.id, 0, |rec| {
            crcs.add(&rec.record);
            Ok(())
        })?;
        if !crc_matches(crcs.basic, r.sync_crc) {
            diffs.push(diff("sync_crc(recomputed)", crcs.basic, r.sync_crc));
        }
        let replica_annot = r.sync_crc_annot.unwrap_or(0);
        if !crc_matches(crcs.annot, replica_annot) {
            diffs.push(diff(
                "sync_crc_annot(recomputed)",
                crcs.annot,
                replica_annot,
            ));
        }
        Ok(diffs)
    }

    fn quotas(
        &mut self,
        userid: &str,
        inbox: &str,
        local: &[Mailbox],
        replica: &ReplicaUser,
    ) -> SyncResult<()> {
        let mut roots: BTreeSet<String> = local
            .iter()
            .filter_map(|m| m.state.quotaroot.clone())
            .collect();
        if self.store.quota(inbox)?.is_some() {
            roots.insert(inbox.to_owned());
        }
        for q in &replica.quotas {
            roots.insert(q.root.clone());
        }
        for root in &roots {
            let here = self.store.quota(root)?;
            let there = replica.quotas.iter().find(|q| q.root == *root);
            let show = |q: Option<&csync_protocol::metadata::Quota>| match q {
                None => "none".to_owned(),
                Some(q) => format!(
                    "storage={} message={}",
                    q.storage_limit()
                        .map_or("unlimited".into(), |v| v.to_string()),
                    q.message.map_or("unlimited".into(), |v| v.to_string())
                ),
            };
            let same = match (&here, there) {
                (Some(l), Some(r)) => same_limits(l, r),
                (None, None) => true,
                _ => false,
            };
            let diffs = if same {
                Vec::new()
            } else {
                vec![diff("quota", show(here.as_ref()), show(there))]
            };
            self.line(userid, &format!("(quota {root})"), &diffs)?;
        }
        Ok(())
    }

    fn subscriptions(&mut self, userid: &str, replica: &[String]) -> SyncResult<()> {
        let local: BTreeSet<String> = self.store.subscriptions(userid)?.into_iter().collect();
        let remote: BTreeSet<String> = replica.iter().cloned().collect();
        let mut diffs = Vec::new();
        for name in local.difference(&remote) {
            diffs.push(diff("subscription", name, "-"));
        }
        for name in remote.difference(&local) {
            diffs.push(diff("subscription", "-", name));
        }
        self.line(userid, "(subscriptions)", &diffs)
    }

    fn seen(&mut self, userid: &str, replica: &ReplicaUser) -> SyncResult<()> {
        let mut diffs = Vec::new();
        for seen in self.store.seen(userid)? {
            if replica.seen.contains(&seen) {
                continue;
            }
            let there = replica
                .seen
                .iter()
                .find(|s| s.uniqueid == seen.uniqueid)
                .map_or("-".to_owned(), |s| {
                    format!("{} lastuid={}", s.seenuids, s.lastuid)
                });
            diffs.push(FieldDiff {
                field: "seen",
                local: format!(
                    "{}:{} lastuid={}",
                    seen.uniqueid, seen.seenuids, seen.lastuid
                ),
                replica: there,
            });
        }
        self.line(userid, "(seen)", &diffs)
    }

    /// The script comparison of the legacy sieve sync (§4.8).
    fn sieve(&mut self, userid: &str, replica: &[SieveEntry]) -> SyncResult<()> {
        let local = self.store.sieve_entries(userid)?;
        let mut diffs = Vec::new();
        for entry in local.iter().filter(|e| e.filename.ends_with(".script")) {
            let there = replica.iter().find(|r| r.filename == entry.filename);
            let same = there.is_some_and(|r| match (&r.guid, &entry.guid) {
                (Some(a), Some(b)) => a == b,
                _ => r.last_update >= entry.last_update,
            });
            if !same {
                let show = |e: Option<&SieveEntry>| {
                    e.map_or("-".to_owned(), |e| {
                        e.guid.map_or("(no guid)".to_owned(), |g| g.to_string())
                    })
                };
                diffs.push(FieldDiff {
                    field: "sieve",
                    local: format!("{} {}", entry.filename, show(Some(entry))),
                    replica: show(there),
                });
            }
        }
        for r in replica.iter().filter(|r| r.filename.ends_with(".script")) {
            if !local.iter().any(|l| l.filename == r.filename) {
                diffs.push(diff("sieve", "-", &r.filename));
            }
        }
        let active = |entries: &[SieveEntry]| {
            entries
                .iter()
                .find(|e| e.is_active == Some(true))
                .map_or("-".to_owned(), |e| e.filename.clone())
        };
        let (la, ra) = (active(&local), active(replica));
        if la != ra {
            diffs.push(diff("sieve active", la, ra));
        }
        self.line(userid, "(sieve)", &diffs)
    }
}

/// `-A`: users in order, then shared mailboxes; `DELETED.*` and tombstones are
/// reached through their users (as a sync does).
pub fn all_work(
    store: &Store,
    prefix: Option<&str>,
) -> Result<(Vec<String>, Vec<String>), csync_mailstore::StoreError> {
    let ns = store.namespace().clone();
    let mut users: Vec<String> = Vec::new();
    let mut shared: Vec<String> = Vec::new();
    store.for_each_mailbox(prefix, |m| {
        if m.is_tombstone() || ns.is_deleted(m.name()) {
            return Ok(());
        }
        match &m.owner {
            Some(owner) => {
                if !users.contains(owner) {
                    users.push(owner.clone());
                }
            }
            None => shared.push(m.name().to_owned()),
        }
        Ok(())
    })?;
    Ok((users, shared))
}
