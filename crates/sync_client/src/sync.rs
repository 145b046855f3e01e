//! What the master does (spec §4): USER syncs, mailbox-list syncs, the folder pass
//! (RESERVE → MESSAGE → MAILBOX, renames in a safe order, UNMAILBOX only with a
//! tombstone), the unchanged check, SINCE_MODSEQ deltas, and the metadata passes
//! (quotas, subscriptions, seen, sieve, server annotations). The repair path of
//! §4.6 is in [`crate::repair`].
//!
//! Records and message files are streamed from the store into the socket: a mailbox
//! of any size goes out in constant memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use csync_mailstore::{Mailbox, Store, StoreError};
use csync_protocol::command::{ApplyCommand, Command, GetCommand, Rename};
use csync_protocol::crc::crc_matches;
use csync_protocol::mailbox::{MailboxState, Since};
use csync_protocol::metadata::{Quota, SeenRecord, SieveEntry, SieveScript};
use csync_protocol::response::{DataItem, SyncStatus};
use csync_protocol::{Guid, MailboxAnnotation};
use tracing::{debug, info, info_span, warn};

use crate::conn::{CarriedMailbox, ConnError, Connection, MessageUpload, Reply};
use crate::progress::Progress;

/// The Cyrus client sends at most this many files per `APPLY MESSAGE`.
pub const MAX_FILES_PER_MESSAGE: usize = 1024;
/// And at most this many GUIDs per `APPLY RESERVE` (Cyrus: 8193).
pub const MAX_GUIDS_PER_RESERVE: usize = 8192;

/// How an attempt at a mailbox ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempted {
    /// Finished (or nothing to do).
    Done,
    /// `APPLY MAILBOX` sent; its reply is still to be collected.
    Deferred,
}

/// Why a sync step failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("local store: {0}")]
    Store(#[from] StoreError),
    #[error("{command} for {target}: replica answered {reply}")]
    Replica {
        command: String,
        target: String,
        status: SyncStatus,
        reply: String,
    },
    #[error("{0}: the replica changed while we worked; try again")]
    Again(String),
    #[error("{mailbox}: the replica has changes the master does not, and copy-back is off (-O)")]
    NoCopyback { mailbox: String },
}

impl SyncError {
    /// The replica's status, for the Cyrus retry and promotion rules.
    pub fn status(&self) -> Option<SyncStatus> {
        match self {
            SyncError::Replica { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the connection itself is gone (reconnect before going on).
    pub fn is_connection(&self) -> bool {
        matches!(self, SyncError::Conn(_))
    }
}

pub type SyncResult<T> = Result<T, SyncError>;

/// How the master syncs.
#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    /// `-p`: the replica partition for `-u`/`-m` (else each mailbox's own).
    pub partition: Option<String>,
    /// `-O`: never repair by copying back; `APPLY FORCE` was sent.
    pub no_copyback: bool,
    /// `-L`: the `LOCAL_` command spellings.
    pub local: bool,
}

/// The replica's view of a user, from `GET USER`.
#[derive(Clone, Debug, Default)]
pub struct ReplicaUser {
    pub mailboxes: Vec<MailboxState>,
    pub quotas: Vec<Quota>,
    pub seen: Vec<SeenRecord>,
    pub lsub: Vec<String>,
    pub sieve: Vec<SieveEntry>,
}

impl ReplicaUser {
    pub(crate) fn from_reply(reply: Reply) -> ReplicaUser {
        let mut user = ReplicaUser::default();
        for item in reply.data {
            match item {
                DataItem::Mailbox(m) => user.mailboxes.push(*m),
                DataItem::Quota(q) => user.quotas.push(q),
                DataItem::Seen(s) => user.seen.push(s),
                DataItem::Lsub(l) => user.lsub.extend(l),
                DataItem::Sieve(s) => user.sieve.push(s),
                other => debug!(?other, "ignoring unexpected GET USER item"),
            }
        }
        user
    }
}

/// One sync run's state: the local store, the connection, the options.
#[derive(Debug)]
pub struct Syncer<'a> {
    pub store: &'a mut Store,
    pub conn: &'a mut Connection,
    pub opts: &'a SyncOptions,
    pub progress: &'a mut Progress,
}

fn check(reply: &Reply, command: &str, target: &str) -> SyncResult<()> {
    match reply.status() {
        SyncStatus::Ok => Ok(()),
        status => Err(SyncError::Replica {
            command: command.to_owned(),
            target: target.to_owned(),
            status,
            reply: reply.text(),
        }),
    }
}

/// The syncable OPTIONS letters (§8.9), as a comparable set.
fn option_bits(options: &str) -> BTreeSet<char> {
    options.chars().filter(|c| "PSDA".contains(*c)).collect()
}

impl Syncer<'_> {
    fn apply(&mut self, command: ApplyCommand, target: &str) -> SyncResult<Reply> {
        let name = apply_name(&command);
        let reply = self.conn.command(&Command::Apply(command))?;
        check(&reply, name, target)?;
        Ok(reply)
    }

    fn get_user(&mut self, userid: &str) -> SyncResult<ReplicaUser> {
        let reply = self
            .conn
            .command(&Command::Get(GetCommand::User(userid.to_owned())))?;
        replica_user(reply, userid)
    }

    /// Collects the replies a previous user's last mailbox left on the connection
    /// (see [`sync_user_then`](Self::sync_user_then)); its failure is recorded under
    /// that user, and returned only if the connection failed.
    pub fn conclude_carried(&mut self) -> SyncResult<()> {
        match self.conn.carried.take() {
            Some(carried) => self.conclude_pending(carried.into()),
            None => Ok(()),
        }
    }

    fn conclude_pending(&mut self, pending: Pending) -> SyncResult<()> {
        let result = self.conclude_deferred(&pending.mailbox);
        match (pending.carried_from, result) {
            (_, Ok(())) => Ok(()),
            (None, Err(e)) => Err(e),
            (Some(userid), Err(e)) => {
                let connection = e.is_connection();
                self.conn
                    .carried_failures
                    .push((userid, format!("{}: {e}", pending.mailbox)));
                if connection { Err(e) } else { Ok(()) }
            }
        }
    }

    fn get_mailboxes(&mut self, names: &[String]) -> SyncResult<Vec<MailboxState>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let reply = self
            .conn
            .command(&Command::Get(GetCommand::Mailboxes(names.to_vec())))?;
        check(&reply, "GET MAILBOXES", &names.join(" "))?;
        Ok(reply
            .data
            .into_iter()
            .filter_map(|d| match d {
                DataItem::Mailbox(m) => Some(*m),
                _ => None,
            })
            .collect())
    }

    /// USER sync (§4.2): everything of one user.
    pub fn sync_user(&mut self, userid: &str) -> SyncResult<()> {
        self.sync_user_then(userid, None)
    }

    /// [`sync_user`](Self::sync_user) in a run that syncs `next` right after: its
    /// `GET USER` is sent before this user's last mailbox, and that mailbox's replies
    /// are left on the connection ([`Connection::carried`]) for the next folder pass
    /// to collect. So the master reads and compresses the next user's first upload
    /// while the replica stores and commits this user's last one, instead of both
    /// waiting at every user boundary. A failure of the carried mailbox is recorded
    /// in [`Connection::carried_failures`] under this user; [`conclude_carried`]
    /// (Self::conclude_carried) collects what the last user leaves.
    pub fn sync_user_then(&mut self, userid: &str, next: Option<&str>) -> SyncResult<()> {
        let _span = info_span!("user", user = %userid).entered();
        // Between users: the staged set is bounded here (csync_staged_limit).
        self.conn.restart_if_full()?;
        let inbox = self.store.namespace().inbox(userid);
        for attempt in 0..3 {
            let replica = match self.conn.take_prefetched_user(userid) {
                Some(reply) => replica_user(reply?, userid)?,
                None => self.get_user(userid)?,
            };
            if self
                .store
                .mailbox(&inbox)?
                .filter(Mailbox::is_real)
                .is_none()
            {
                // Deleted users go through UNUSER records only (§4.2 step 3).
                info!("{userid} has no INBOX here: skipped");
                return Ok(());
            }
            // The #sieve mailbox travels as a mailbox only with SIEVE-MAILBOX (§4.2
            // step 4); a replica refuses it otherwise.
            let sieve_mailbox = self.conn.sieve_mailbox;
            let master: Vec<Mailbox> = self
                .store
                .user_mailboxes(userid)?
                .into_iter()
                .filter(|m| !m.is_tombstone() && (sieve_mailbox || !is_sieve_mailbox(m)))
                .collect();
            let handoff = next.map(|next| (userid, next));
            match self.folder_pass(&master, &replica.mailboxes, true, handoff) {
                Ok(()) => {}
                Err(SyncError::Again(why)) if attempt < 2 => {
                    debug!("again: {why}");
                    continue;
                }
                Err(e) => return Err(e),
            }
            let roots: BTreeSet<String> = master
                .iter()
                .filter_map(|m| m.state.quotaroot.clone())
                .collect();
            self.sync_quotas_of_user(&roots, &replica.quotas, &inbox)?;
            self.sync_subscriptions(userid, &replica.lsub)?;
            if !self.conn.sieve_mailbox {
                self.sync_sieve(userid, &replica.sieve)?;
            } else if !self.store.sieve_entries(userid)?.is_empty() {
                warn!(
                    "{userid}: sieve scripts in csync's table are not replicated while \
                     SIEVE-MAILBOX is on (csync_sieve_mailbox)"
                );
            }
            self.sync_seen(userid, &replica.seen)?;
            self.progress.user_done();
            return Ok(());
        }
        Err(SyncError::Again(format!(
            "user {userid}: renames kept changing"
        )))
    }

    /// META sync: seen, subscriptions and sieve of a user (`-s`, rolling META).
    pub fn sync_meta(&mut self, userid: &str) -> SyncResult<()> {
        let reply = self
            .conn
            .command(&Command::Get(GetCommand::Meta(userid.to_owned())))?;
        check(&reply, "GET META", userid)?;
        let replica = ReplicaUser::from_reply(reply);
        self.sync_subscriptions(userid, &replica.lsub)?;
        if !self.conn.sieve_mailbox {
            self.sync_sieve(userid, &replica.sieve)?;
        }
        self.sync_seen(userid, &replica.seen)
    }

    /// Mailbox-list sync (§4.3): these names, no remote deletes.
    pub fn sync_mailboxes(&mut self, names: &[String]) -> SyncResult<()> {
        // Between two items (users, shared mailboxes): nothing staged is still
        // referred to by a command of ours, so the set may be dropped here.
        self.conn.restart_if_full()?;
        let mut wanted: Vec<String> = names.to_vec();
        wanted.sort();
        wanted.dedup();
        // §4.3 step 2: without SIEVE-MAILBOX a #sieve mailbox is not sent (a replica
        // refuses it); its user gets a META sync (scripts) at the end instead.
        let mut sieve_users: BTreeSet<String> = BTreeSet::new();
        if !self.conn.sieve_mailbox {
            let mut kept = Vec::new();
            for name in wanted {
                match self.store.mailbox(&name)? {
                    Some(m) if is_sieve_mailbox(&m) => {
                        debug!("{name}: #sieve mailbox skipped (no SIEVE-MAILBOX)");
                        sieve_users.extend(m.owner);
                    }
                    _ => kept.push(name),
                }
            }
            wanted = kept;
        }
        for attempt in 0..3 {
            if wanted.is_empty() {
                break;
            }
            let replica = self.get_mailboxes(&wanted)?;
            let mut master = Vec::new();
            for name in &wanted {
                if let Some(m) = self.store.mailbox(name)?
                    && !m.is_tombstone()
                {
                    master.push(m);
                }
            }
            match self.folder_pass(&master, &replica, false, None) {
                Ok(()) => break,
                Err(SyncError::Again(why)) if attempt < 2 => debug!("again: {why}"),
                Err(e) => return Err(e),
            }
        }
        for userid in &sieve_users {
            self.sync_meta(userid)?;
        }
        Ok(())
    }

    /// The folder pass (§4.4).
    /// `handoff`: (this user, the next) when the last mailbox may be carried over
    /// (see [`sync_user_then`](Self::sync_user_then)).
    fn folder_pass(
        &mut self,
        master: &[Mailbox],
        replica: &[MailboxState],
        delete_remote: bool,
        handoff: Option<(&str, &str)>,
    ) -> SyncResult<()> {
        let by_uniqueid: HashMap<&str, &MailboxState> =
            replica.iter().map(|r| (r.uniqueid.as_str(), r)).collect();
        // Renames: a master mailbox whose uniqueid the replica has under another name
        // or partition.
        let mut renames: Vec<Rename> = Vec::new();
        for m in master {
            if let Some(r) = by_uniqueid.get(m.state.uniqueid.as_str()) {
                let partition = self.target_partition(m);
                let partition_differs =
                    m.is_real() && !r.partition.is_empty() && r.partition != partition;
                if r.mboxname != m.state.mboxname || partition_differs {
                    renames.push(Rename {
                        old_mboxname: r.mboxname.clone(),
                        new_mboxname: m.state.mboxname.clone(),
                        partition,
                        uidvalidity: Some(m.state.uidvalidity),
                    });
                }
            }
        }
        if !renames.is_empty() {
            self.do_renames(renames, replica)?;
            return Err(SyncError::Again(
                "renamed; refetching the replica's state".into(),
            ));
        }
        if delete_remote {
            let master_ids: BTreeSet<&str> =
                master.iter().map(|m| m.state.uniqueid.as_str()).collect();
            for r in replica {
                if master_ids.contains(r.uniqueid.as_str()) {
                    continue;
                }
                // Only a local tombstone under exactly that name allows a delete.
                match self.store.mailbox(&r.mboxname)? {
                    Some(local) if local.is_tombstone() => {
                        info!("{}: deleted here, deleting on the replica", r.mboxname);
                        self.apply(
                            ApplyCommand::Unmailbox {
                                local: self.opts.local,
                                mboxname: r.mboxname.clone(),
                            },
                            &r.mboxname,
                        )
                        .or_else(|e| match e.status() {
                            // Already gone: what we wanted.
                            Some(SyncStatus::MailboxNonexistent) => Ok(empty_reply()),
                            _ => Err(e),
                        })?;
                    }
                    _ => info!(
                        "{}: on the replica only, and no tombstone here: left alone",
                        r.mboxname
                    ),
                }
            }
        }
        self.reserve(master, replica, &by_uniqueid)?;
        let result = self.update_mailboxes(master, &by_uniqueid, handoff);
        if result.is_err() {
            // A failure left the reply of a pipelined APPLY MAILBOX uncollected.
            self.conn.discard_deferred();
        }
        result
    }

    /// Every mailbox of the pass, pipelined one deep: a mailbox's `APPLY MAILBOX` reply,
    /// and that of the upload just before it, are collected only after the next
    /// mailbox's `APPLY MESSAGE` has been sent, so the master reads and compresses
    /// those files while the replica stores and commits (the replica still executes
    /// the commands in order; nothing depends on the replies in between).
    /// A failed first attempt then gets the same retries and repair as
    /// [`update_mailbox`](Self::update_mailbox), just one mailbox later.
    fn update_mailboxes(
        &mut self,
        master: &[Mailbox],
        by_uniqueid: &HashMap<&str, &MailboxState>,
        handoff: Option<(&str, &str)>,
    ) -> SyncResult<()> {
        // A previous user's last mailbox is collected like this pass's own.
        let mut pending: Option<Pending> = self.conn.carried.take().map(Pending::from);
        for (i, m) in master.iter().enumerate() {
            if i + 1 == master.len()
                && let Some((_, next)) = handoff
                && !self.conn.staged_full()
                && !self.conn.has_prefetched_user()
            {
                // Not with a full staged set: the next user starts with a RESTART,
                // which needs nothing outstanding.
                self.conn.prefetch_user(next)?;
            }
            let r = by_uniqueid.get(m.state.uniqueid.as_str()).copied();
            let first = {
                let _span = info_span!("mailbox", mailbox = %m.name()).entered();
                self.attempt(m.name(), r, true, true)
            };
            if let Some(p) = pending.take() {
                self.conclude_pending(p)?;
            }
            match first {
                Ok(Attempted::Deferred) => {
                    pending = Some(Pending {
                        mailbox: m.name().to_owned(),
                        carried_from: None,
                    })
                }
                first => {
                    let _span = info_span!("mailbox", mailbox = %m.name()).entered();
                    self.conclude(m.name(), first.map(|_| ()))?;
                }
            }
        }
        match (pending.take(), handoff) {
            (Some(p), Some((userid, _)))
                if p.carried_from.is_none() && self.conn.has_prefetched_user() =>
            {
                self.conn.carried = Some(CarriedMailbox {
                    userid: userid.to_owned(),
                    mailbox: p.mailbox,
                });
                Ok(())
            }
            (Some(p), _) => self.conclude_pending(p),
            (None, _) => Ok(()),
        }
    }

    /// Collects a deferred `APPLY MAILBOX` reply (and that of the upload sent just
    /// before it, if any) and finishes that mailbox's update.
    fn conclude_deferred(&mut self, name: &str) -> SyncResult<()> {
        let _span = info_span!("mailbox", mailbox = %name).entered();
        let uploaded = match self.conn.deferred_upload_next() {
            Some((files, bytes)) => {
                let reply = self.conn.take_deferred();
                Some(
                    reply
                        .map_err(SyncError::from)
                        .and_then(|reply| check(&reply, "APPLY MESSAGE", name))
                        .map(|()| self.progress.uploaded(files, bytes)),
                )
            }
            None => None,
        };
        let reply = self.conn.take_deferred();
        let first = match uploaded {
            // The mailbox could not have been applied without its messages; its own
            // reply says so in other words.
            Some(Err(e)) => Err(e),
            _ => reply
                .map_err(SyncError::from)
                .and_then(|reply| self.applied(&reply, name)),
        };
        self.conclude(name, first)
    }

    fn target_partition(&self, m: &Mailbox) -> String {
        self.opts
            .partition
            .clone()
            .unwrap_or_else(|| m.state.partition.clone())
    }

    /// Renames in an order that never renames onto a name still waiting to be renamed
    /// away (§4.4 step 4).
    fn do_renames(&mut self, mut pending: Vec<Rename>, replica: &[MailboxState]) -> SyncResult<()> {
        let mut occupied: BTreeSet<String> = replica.iter().map(|r| r.mboxname.clone()).collect();
        while !pending.is_empty() {
            let Some(i) = pending
                .iter()
                .position(|r| !occupied.contains(&r.new_mboxname))
            else {
                return Err(SyncError::Again(format!(
                    "no safe order for renames {}",
                    pending
                        .iter()
                        .map(|r| format!("{}->{}", r.old_mboxname, r.new_mboxname))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            let rename = pending.remove(i);
            info!("rename {} -> {}", rename.old_mboxname, rename.new_mboxname);
            occupied.remove(&rename.old_mboxname);
            occupied.insert(rename.new_mboxname.clone());
            let target = rename.new_mboxname.clone();
            self.apply(
                ApplyCommand::Rename {
                    local: self.opts.local,
                    rename,
                },
                &target,
            )?;
        }
        Ok(())
    }

    /// `APPLY RESERVE` (§4.4 step 1): which messages the replica already has.
    fn reserve(
        &mut self,
        master: &[Mailbox],
        replica: &[MailboxState],
        by_uniqueid: &HashMap<&str, &MailboxState>,
    ) -> SyncResult<()> {
        if replica.is_empty() {
            // Nothing can be there: everything is uploaded.
            return Ok(());
        }
        let mut per_partition: BTreeMap<String, BTreeSet<Guid>> = BTreeMap::new();
        for m in master.iter().filter(|m| m.is_real()) {
            let since_uid = by_uniqueid
                .get(m.state.uniqueid.as_str())
                .map_or(0, |r| r.last_uid);
            let partition = self.target_partition(m);
            let set = per_partition.entry(partition.clone()).or_default();
            let conn = &*self.conn;
            self.store.for_each_record(m.id, 0, |rec| {
                if rec.has_file
                    && rec.record.uid > since_uid
                    && !conn.is_staged(&partition, &rec.record.guid)
                {
                    set.insert(rec.record.guid);
                }
                Ok(())
            })?;
        }
        let names: Vec<String> = replica.iter().map(|r| r.mboxname.clone()).collect();
        for (partition, guids) in per_partition {
            let guids: Vec<Guid> = guids.into_iter().collect();
            for chunk in guids.chunks(MAX_GUIDS_PER_RESERVE) {
                let reply = self.apply(
                    ApplyCommand::Reserve(csync_protocol::command::Reserve {
                        partition: partition.clone(),
                        mboxnames: names.clone(),
                        guids: chunk.to_vec(),
                    }),
                    &partition,
                )?;
                let missing: BTreeSet<Guid> = reply
                    .data
                    .iter()
                    .filter_map(|d| match d {
                        DataItem::Missing(g) => Some(g.iter().copied()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                for guid in chunk {
                    if !missing.contains(guid) {
                        self.conn.mark_staged(&partition, *guid);
                        self.progress.reserved(1);
                    }
                }
            }
        }
        Ok(())
    }

    /// Brings one mailbox up to date on the replica (§4.5), with Cyrus's attempt /
    /// retry / repair sequence.
    pub fn update_mailbox(
        &mut self,
        m: &Mailbox,
        replica: Option<&MailboxState>,
    ) -> SyncResult<()> {
        let _span = info_span!("mailbox", mailbox = %m.name()).entered();
        let first = self.attempt(m.name(), replica, true, false).map(|_| ());
        self.conclude(m.name(), first)
    }

    /// After the first attempt: Cyrus's retry with fresh replica state on a checksum
    /// failure, and the repair (§4.6) when the replica diverged.
    fn conclude(&mut self, name: &str, first: SyncResult<()>) -> SyncResult<()> {
        let result = match first {
            Err(e) if e.status() == Some(SyncStatus::SyncChecksum) => {
                info!("checksum failure; retrying with fresh replica state");
                self.retry(name)
            }
            other => other,
        };
        let needs_repair = match &result {
            Err(SyncError::Again(_)) => true,
            Err(e) => e.status() == Some(SyncStatus::SyncChecksum),
            Ok(()) => false,
        };
        if !needs_repair {
            return result;
        }
        if self.opts.no_copyback {
            return Err(SyncError::NoCopyback {
                mailbox: name.to_owned(),
            });
        }
        warn!("replica differs; repairing from GET FULLMAILBOX");
        crate::repair::full_update(self, name)?;
        self.retry(name)
    }

    fn retry(&mut self, name: &str) -> SyncResult<()> {
        let fresh = self.get_mailboxes(&[name.to_owned()])?;
        let replica = fresh.into_iter().next();
        self.attempt(name, replica.as_ref(), false, false)
            .map(|_| ())
    }

    /// One attempt (§4.5 steps 1–10). With `defer`, the final `APPLY MAILBOX` is sent
    /// without waiting for its reply ([`Attempted::Deferred`]; see
    /// [`Connection::take_deferred`]).
    fn attempt(
        &mut self,
        name: &str,
        replica: Option<&MailboxState>,
        first: bool,
        defer: bool,
    ) -> SyncResult<Attempted> {
        let Some(mut m) = self.store.mailbox(name)? else {
            // Gone meanwhile: its deletion is handled elsewhere.
            return Ok(Attempted::Done);
        };
        if m.is_tombstone() {
            return Ok(Attempted::Done);
        }
        if m.is_intermediate() {
            let mut state = m.state.clone();
            state.highestmodseq = m.state.foldermodseq;
            let target = state.mboxname.clone();
            self.apply(
                ApplyCommand::Mailbox {
                    local: self.opts.local,
                    mailbox: Box::new(state),
                },
                &target,
            )?;
            return Ok(Attempted::Done);
        }
        if let Some(r) = replica {
            if first && m.deletedmodseq > r.highestmodseq {
                return Err(SyncError::Again(format!(
                    "{name}: records purged here since the replica's modseq"
                )));
            }
            // Adopt what the replica has higher (§4.5 steps 4 and 6).
            let mut raise = false;
            if r.uidvalidity > m.state.uidvalidity {
                m.state.uidvalidity = r.uidvalidity;
                raise = true;
            }
            if r.foldermodseq > m.state.foldermodseq {
                m.state.foldermodseq = r.foldermodseq;
                raise = true;
            }
            if r.raclmodseq > m.state.raclmodseq {
                m.state.raclmodseq = r.raclmodseq;
                raise = true;
            }
            if raise {
                let local = m.clone();
                self.store.write(|txn| txn.update_header(&local))?;
            }
            if self.unchanged(&m, r) {
                debug!("unchanged");
                self.progress.mailbox_done();
                return Ok(Attempted::Done);
            }
        }
        let since_modseq = replica.map_or(0, |r| r.highestmodseq);
        let replica_last_uid = replica.map_or(0, |r| r.last_uid);
        let partition = self.target_partition(&m);
        // The header and the records are separate reads: a message delivered in
        // between has a uid above the header's LAST_UID and waits for the next sync
        // (its APPEND record triggers one) rather than contradict the header.
        let header_last_uid = m.state.last_uid;
        // Upload what the replica lacks, ≤ 1024 files per APPLY MESSAGE.
        let mut batch: Vec<MessageUpload> = Vec::new();
        let mut pending_error: Option<SyncError> = None;
        {
            let dir = self.store.mailbox_dir(&m)?;
            let conn = &mut *self.conn;
            let progress = &mut *self.progress;
            self.store
                .for_each_record(m.id, since_modseq, |rec| {
                    let r = &rec.record;
                    if !rec.has_file
                        || r.uid <= replica_last_uid
                        || r.uid > header_last_uid
                        || conn.is_staged(&partition, &r.guid)
                    {
                        return Ok(());
                    }
                    if batch.iter().any(|b| b.guid == r.guid) {
                        return Ok(());
                    }
                    let path = csync_mailstore::files::message_path(&dir, r.uid);
                    batch.push(MessageUpload::new(&partition, r.guid, r.size, &path));
                    if batch.len() >= MAX_FILES_PER_MESSAGE
                        && let Err(e) = upload(conn, progress, &mut batch, name)
                    {
                        pending_error = Some(e);
                        return Err(StoreError::Invalid("upload failed".into()));
                    }
                    Ok(())
                })
                .or_else(|e| {
                    if pending_error.is_some() {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })?;
        }
        if let Some(e) = pending_error {
            return Err(e);
        }
        if defer {
            // Its reply is collected with the APPLY MAILBOX's (conclude_deferred).
            self.conn.apply_message_deferred(&batch)?;
            batch.clear();
        } else {
            upload(self.conn, self.progress, &mut batch, name)?;
        }
        // The mailbox itself, records streamed.
        let mut state = m.state.clone();
        state.partition = partition;
        state.records = None;
        state.since = match replica {
            Some(r) if first && r.highestmodseq != 0 => Some(Since {
                modseq: r.highestmodseq,
                crc: r.sync_crc,
                crc_annot: r.sync_crc_annot.unwrap_or(0),
            }),
            _ => None,
        };
        let key = if self.opts.local {
            "LOCAL_MAILBOX"
        } else {
            "MAILBOX"
        };
        let store = &*self.store;
        let mut records_sent = 0u64;
        let mut write = |enc: &mut csync_protocol::encode::Encoder,
                         flush: &mut dyn FnMut(
            &mut csync_protocol::encode::Encoder,
        ) -> Result<(), ConnError>| {
            enc.word("APPLY").key(key).begin_kvlist();
            state.encode_fields(enc);
            enc.key("RECORD").begin_list();
            let mut io_error = None;
            store
                .for_each_record(m.id, since_modseq, |rec| {
                    if rec.record.uid > header_last_uid {
                        return Ok(());
                    }
                    rec.record.encode(enc);
                    records_sent += 1;
                    if let Err(e) = flush(enc) {
                        io_error = Some(e);
                        return Err(StoreError::Invalid("connection failed".into()));
                    }
                    Ok(())
                })
                .map_err(|e| match io_error.take() {
                    Some(c) => c,
                    None => ConnError::Protocol(format!("reading {name}: {e}")),
                })?;
            enc.end().end().end_line();
            Ok(())
        };
        if defer {
            self.conn.command_streamed_deferred(&mut write)?;
            debug!(records = records_sent, "sent; reply deferred");
            return Ok(Attempted::Deferred);
        }
        let reply = self.conn.command_streamed(&mut write)?;
        debug!(records = records_sent, "sent");
        self.applied(&reply, name)?;
        Ok(Attempted::Done)
    }

    /// The reply to a mailbox's `APPLY MAILBOX`.
    fn applied(&mut self, reply: &Reply, name: &str) -> SyncResult<()> {
        check(reply, "APPLY MAILBOX", name)?;
        debug!("applied");
        self.progress.mailbox_done();
        Ok(())
    }

    /// §4.5 step 7: nothing to send when every field and both CRCs agree.
    fn unchanged(&self, m: &Mailbox, r: &MailboxState) -> bool {
        mailbox_differences(&m.state, r).is_empty()
    }

    fn sync_quotas_of_user(
        &mut self,
        roots: &BTreeSet<String>,
        replica: &[Quota],
        inbox: &str,
    ) -> SyncResult<()> {
        let mut roots = roots.clone();
        if self.store.quota(inbox)?.is_some() {
            roots.insert(inbox.to_owned());
        }
        for root in &roots {
            let Some(local) = self.store.quota(root)? else {
                continue;
            };
            let same = replica
                .iter()
                .any(|q| q.root == *root && same_limits(q, &local));
            if !same {
                self.apply(ApplyCommand::Quota(local), root)?;
            }
        }
        for q in replica {
            if self.store.quota(&q.root)?.is_none() {
                self.apply(ApplyCommand::Unquota(q.root.clone()), &q.root)?;
            }
        }
        Ok(())
    }

    /// A rolling QUOTA record: push the root as it is now (no comparison).
    pub fn sync_quota(&mut self, root: &str) -> SyncResult<()> {
        match self.store.quota(root)? {
            Some(q) => self.apply(ApplyCommand::Quota(q), root)?,
            None => self
                .apply(ApplyCommand::Unquota(root.to_owned()), root)
                .or_else(|e| match e.status() {
                    Some(SyncStatus::MailboxNonexistent) => Ok(empty_reply()),
                    _ => Err(e),
                })?,
        };
        Ok(())
    }

    fn sync_subscriptions(&mut self, userid: &str, replica: &[String]) -> SyncResult<()> {
        let local: BTreeSet<String> = self.store.subscriptions(userid)?.into_iter().collect();
        let remote: BTreeSet<String> = replica.iter().cloned().collect();
        for name in local.difference(&remote) {
            self.apply(
                ApplyCommand::Sub {
                    userid: userid.to_owned(),
                    mboxname: name.clone(),
                },
                name,
            )?;
        }
        for name in remote.difference(&local) {
            self.apply(
                ApplyCommand::Unsub {
                    userid: userid.to_owned(),
                    mboxname: name.clone(),
                },
                name,
            )?;
        }
        Ok(())
    }

    /// A rolling SUB record: send SUB or UNSUB by the current local state.
    pub fn sync_subscription(&mut self, userid: &str, mboxname: &str) -> SyncResult<()> {
        let subscribed = self
            .store
            .subscriptions(userid)?
            .iter()
            .any(|n| n == mboxname);
        let (userid, mboxname) = (userid.to_owned(), mboxname.to_owned());
        let target = mboxname.clone();
        let command = if subscribed {
            ApplyCommand::Sub { userid, mboxname }
        } else {
            ApplyCommand::Unsub { userid, mboxname }
        };
        self.apply(command, &target)?;
        Ok(())
    }

    fn sync_seen(&mut self, userid: &str, replica: &[SeenRecord]) -> SyncResult<()> {
        for seen in self.store.seen(userid)? {
            if replica.contains(&seen) {
                continue;
            }
            let target = seen.uniqueid.clone();
            self.apply(
                ApplyCommand::Seen {
                    userid: userid.to_owned(),
                    seen,
                },
                &target,
            )?;
        }
        Ok(())
    }

    /// A rolling SEEN record.
    pub fn sync_one_seen(&mut self, userid: &str, uniqueid: &str) -> SyncResult<()> {
        if let Some(seen) = self
            .store
            .seen(userid)?
            .into_iter()
            .find(|s| s.uniqueid == uniqueid)
        {
            self.apply(
                ApplyCommand::Seen {
                    userid: userid.to_owned(),
                    seen,
                },
                uniqueid,
            )?;
        }
        Ok(())
    }

    /// Sieve scripts with the script-level commands (§4.8), when SIEVE-MAILBOX is off.
    fn sync_sieve(&mut self, userid: &str, replica: &[SieveEntry]) -> SyncResult<()> {
        let local = self.store.sieve_entries(userid)?;
        for entry in local.iter().filter(|e| e.filename.ends_with(".script")) {
            let same = replica.iter().any(|r| {
                r.filename == entry.filename
                    && match (&r.guid, &entry.guid) {
                        (Some(a), Some(b)) => a == b,
                        _ => r.last_update >= entry.last_update,
                    }
            });
            if same {
                continue;
            }
            let name = entry.filename.trim_end_matches(".script");
            let Some((content, last_update, _)) = self.store.sieve_script(userid, name)? else {
                continue;
            };
            self.apply(
                ApplyCommand::Sieve(SieveScript {
                    userid: userid.to_owned(),
                    filename: entry.filename.clone(),
                    last_update: Some(last_update),
                    content,
                }),
                &entry.filename,
            )?;
        }
        for r in replica.iter().filter(|r| r.filename.ends_with(".script")) {
            if !local.iter().any(|l| l.filename == r.filename) {
                self.apply(
                    ApplyCommand::Unsieve {
                        userid: userid.to_owned(),
                        filename: r.filename.clone(),
                    },
                    &r.filename,
                )?;
            }
        }
        let local_active = local.iter().find(|e| e.is_active == Some(true));
        let replica_active = replica.iter().find(|e| e.is_active == Some(true));
        match (local_active, replica_active) {
            (Some(l), r) if r.map(|r| &r.filename) != Some(&l.filename) => {
                self.apply(
                    ApplyCommand::ActivateSieve {
                        userid: userid.to_owned(),
                        filename: l.filename.clone(),
                    },
                    &l.filename,
                )?;
            }
            (None, Some(_)) => {
                self.apply(
                    ApplyCommand::UnactivateSieve {
                        userid: userid.to_owned(),
                    },
                    userid,
                )?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Server (or mailbox) annotations: a sorted merge on entry then userid (§4.8).
    pub fn sync_annotations(&mut self, mboxname: &str) -> SyncResult<()> {
        let reply = self
            .conn
            .command(&Command::Get(GetCommand::Annotation(mboxname.to_owned())))?;
        check(&reply, "GET ANNOTATION", mboxname)?;
        let remote: BTreeMap<(String, String), Vec<u8>> = reply
            .data
            .into_iter()
            .filter_map(|d| match d {
                DataItem::Annotation(a) => Some(((a.entry, a.userid), a.value.unwrap_or_default())),
                _ => None,
            })
            .collect();
        let local: BTreeMap<(String, String), Vec<u8>> = self
            .store
            .annotations_of(mboxname)?
            .into_iter()
            .map(|a| ((a.entry, a.userid), a.value.unwrap_or_default()))
            .collect();
        for ((entry, userid), value) in &local {
            if remote.get(&(entry.clone(), userid.clone())) != Some(value) {
                self.apply(
                    ApplyCommand::Annotation(MailboxAnnotation {
                        mboxname: mboxname.to_owned(),
                        entry: entry.clone(),
                        userid: userid.clone(),
                        value: Some(value.clone()),
                    }),
                    entry,
                )?;
            }
        }
        for (entry, userid) in remote.keys() {
            if !local.contains_key(&(entry.clone(), userid.clone())) {
                self.apply(
                    ApplyCommand::Unannotation(MailboxAnnotation {
                        mboxname: mboxname.to_owned(),
                        entry: entry.clone(),
                        userid: userid.clone(),
                        value: None,
                    }),
                    entry,
                )?;
            }
        }
        Ok(())
    }

    /// A rolling UNMAILBOX: only when the mailbox is gone here and a tombstone of that
    /// exact name exists (§4.9 step 3.6).
    pub fn sync_unmailbox(&mut self, mboxname: &str) -> SyncResult<()> {
        match self.store.mailbox(mboxname)? {
            Some(m) if m.is_tombstone() => {
                self.apply(
                    ApplyCommand::Unmailbox {
                        local: self.opts.local,
                        mboxname: mboxname.to_owned(),
                    },
                    mboxname,
                )
                .or_else(|e| match e.status() {
                    Some(SyncStatus::MailboxNonexistent) => Ok(empty_reply()),
                    _ => Err(e),
                })?;
            }
            _ => debug!("{mboxname}: no tombstone, nothing to delete"),
        }
        Ok(())
    }

    /// A rolling UNUSER: only when the user's INBOX is gone here (§4.9 step 3.9).
    pub fn sync_unuser(&mut self, userid: &str) -> SyncResult<()> {
        let inbox = self.store.namespace().inbox(userid);
        if self.store.mailbox(&inbox)?.is_some_and(|m| m.is_real()) {
            return Ok(());
        }
        self.apply(
            ApplyCommand::Unuser {
                local: self.opts.local,
                userid: userid.to_owned(),
            },
            userid,
        )?;
        Ok(())
    }
}

/// A `#sieve` mailbox (type `f`, §8.7).
pub fn is_sieve_mailbox(m: &Mailbox) -> bool {
    m.state
        .mboxtype
        .as_deref()
        .is_some_and(|t| t.starts_with('f'))
}

/// True when the store holds any `#sieve` mailbox (a store fed by a Cyrus 3.6 master
/// with SIEVE-MAILBOX): what `csync_sieve_mailbox: auto` decides on.
pub fn store_has_sieve_mailboxes(store: &Store) -> Result<bool, StoreError> {
    let mut found = false;
    let result = store.for_each_mailbox(None, |m| {
        if is_sieve_mailbox(&m) && !m.is_tombstone() {
            found = true;
            // Stops the walk; not an error.
            return Err(StoreError::Invalid(String::new()));
        }
        Ok(())
    });
    match result {
        Err(_) if found => Ok(true),
        Err(e) => Err(e),
        Ok(()) => Ok(false),
    }
}

fn upload(
    conn: &mut Connection,
    progress: &mut Progress,
    batch: &mut Vec<MessageUpload>,
    mailbox: &str,
) -> SyncResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let bytes: u64 = batch.iter().map(|f| u64::from(f.size)).sum();
    let reply = conn.apply_message(batch)?;
    check(&reply, "APPLY MESSAGE", mailbox)?;
    progress.uploaded(batch.len() as u64, bytes);
    batch.clear();
    Ok(())
}

/// A mailbox whose deferred replies are still to be collected; `carried_from`: the
/// user it belongs to, when that is a previous user's.
struct Pending {
    mailbox: String,
    carried_from: Option<String>,
}

impl From<CarriedMailbox> for Pending {
    fn from(carried: CarriedMailbox) -> Pending {
        Pending {
            mailbox: carried.mailbox,
            carried_from: Some(carried.userid),
        }
    }
}

/// The replica's side of a user from a `GET USER` reply.
fn replica_user(reply: Reply, userid: &str) -> SyncResult<ReplicaUser> {
    match reply.status() {
        SyncStatus::Ok => Ok(ReplicaUser::from_reply(reply)),
        // Treated as an empty replica (§4.2).
        SyncStatus::MailboxNonexistent => Ok(ReplicaUser::default()),
        _ => {
            check(&reply, "GET USER", userid)?;
            Ok(ReplicaUser::default())
        }
    }
}

fn empty_reply() -> Reply {
    Reply {
        data: Vec::new(),
        files: Vec::new(),
        completion: csync_protocol::response::Completion::Ok(String::new()),
    }
}

/// One field of the unchanged check (§4.5 step 7) on which master and replica differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDiff {
    pub field: &'static str,
    pub local: String,
    pub replica: String,
}

impl std::fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} local={} replica={}",
            self.field, self.local, self.replica
        )
    }
}

/// The unchanged check of §4.5 step 7, field by field: everything the master compares
/// before deciding that a mailbox needs no `APPLY MAILBOX` (type, LAST_UID,
/// HIGHESTMODSEQ, UIDVALIDITY, RECENTUID, RECENTTIME, POP3_LAST_LOGIN,
/// POP3_SHOW_AFTER, the syncable OPTIONS bits, FOLDERMODSEQ when the replica sent one,
/// the ACL byte for byte, the mailbox annotations, and both CRCs with zero as a
/// wildcard). `local` carries the master's stored CRCs. Empty: unchanged.
pub fn mailbox_differences(local: &MailboxState, replica: &MailboxState) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    let mut differ = |field: &'static str, same: bool, l: String, r: String| {
        if !same {
            out.push(FieldDiff {
                field,
                local: l,
                replica: r,
            });
        }
    };
    let (l, r) = (local, replica);
    let show_type = |t: &Option<String>| t.clone().unwrap_or_else(|| "e".into());
    differ(
        "mboxtype",
        l.mboxtype == r.mboxtype,
        show_type(&l.mboxtype),
        show_type(&r.mboxtype),
    );
    macro_rules! field {
        ($name:literal, $f:ident) => {
            differ($name, l.$f == r.$f, l.$f.to_string(), r.$f.to_string())
        };
    }
    field!("last_uid", last_uid);
    field!("highestmodseq", highestmodseq);
    field!("uidvalidity", uidvalidity);
    field!("recentuid", recentuid);
    field!("recenttime", recenttime);
    field!("pop3_last_login", pop3_last_login);
    field!("pop3_show_after", pop3_show_after);
    differ(
        "options",
        option_bits(&l.options) == option_bits(&r.options),
        format!("{:?}", l.options),
        format!("{:?}", r.options),
    );
    differ(
        "foldermodseq",
        r.foldermodseq == 0 || l.foldermodseq == r.foldermodseq,
        l.foldermodseq.to_string(),
        r.foldermodseq.to_string(),
    );
    differ(
        "acl",
        l.acl == r.acl,
        format!("{:?}", l.acl),
        format!("{:?}", r.acl),
    );
    let (la, ra) = (
        annotation_set(&l.annotations),
        annotation_set(&r.annotations),
    );
    differ(
        "annotations",
        la == ra,
        show_annotations(&la),
        show_annotations(&ra),
    );
    differ(
        "sync_crc",
        crc_matches(l.sync_crc, r.sync_crc),
        l.sync_crc.to_string(),
        r.sync_crc.to_string(),
    );
    let (lc, rc) = (l.sync_crc_annot.unwrap_or(0), r.sync_crc_annot.unwrap_or(0));
    differ(
        "sync_crc_annot",
        crc_matches(lc, rc),
        lc.to_string(),
        rc.to_string(),
    );
    out
}

fn show_annotations(set: &BTreeSet<(&str, &str, &[u8])>) -> String {
    let items: Vec<String> = set
        .iter()
        .map(|(entry, userid, value)| {
            format!("{entry}[{userid}]={:?}", String::from_utf8_lossy(value))
        })
        .collect();
    format!("{{{}}}", items.join(", "))
}

pub(crate) fn same_limits(a: &Quota, b: &Quota) -> bool {
    a.storage_limit() == b.storage_limit()
        && a.message == b.message
        && a.annotation_storage == b.annotation_storage
        && a.num_folders == b.num_folders
}

fn annotation_set(annotations: &[csync_protocol::Annotation]) -> BTreeSet<(&str, &str, &[u8])> {
    annotations
        .iter()
        .map(|a| (a.entry.as_str(), a.userid.as_str(), a.value.as_slice()))
        .collect()
}

fn apply_name(command: &ApplyCommand) -> &'static str {
    match command {
        ApplyCommand::Reserve(_) => "APPLY RESERVE",
        ApplyCommand::Message(_) => "APPLY MESSAGE",
        ApplyCommand::Mailbox { .. } => "APPLY MAILBOX",
        ApplyCommand::Unmailbox { .. } => "APPLY UNMAILBOX",
        ApplyCommand::Rename { .. } => "APPLY RENAME",
        ApplyCommand::Expunge(_) => "APPLY EXPUNGE",
        ApplyCommand::Seen { .. } => "APPLY SEEN",
        ApplyCommand::Sub { .. } => "APPLY SUB",
        ApplyCommand::Unsub { .. } => "APPLY UNSUB",
        ApplyCommand::Quota(_) => "APPLY QUOTA",
        ApplyCommand::Unquota(_) => "APPLY UNQUOTA",
        ApplyCommand::Annotation(_) => "APPLY ANNOTATION",
        ApplyCommand::Unannotation(_) => "APPLY UNANNOTATION",
        ApplyCommand::Sieve(_) => "APPLY SIEVE",
        ApplyCommand::Unsieve { .. } => "APPLY UNSIEVE",
        ApplyCommand::ActivateSieve { .. } => "APPLY ACTIVATE_SIEVE",
        ApplyCommand::UnactivateSieve { .. } => "APPLY UNACTIVATE_SIEVE",
        ApplyCommand::Unuser { .. } => "APPLY UNUSER",
        ApplyCommand::Force => "APPLY FORCE",
        ApplyCommand::Capabilities(_) => "APPLY CAPABILITIES",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csync_mailstore::StoreConfig;
    use csync_protocol::mailbox::Annotation;

    fn state() -> MailboxState {
        MailboxState {
            uniqueid: "u1".into(),
            mboxname: "user.alice".into(),
            sync_crc: 7,
            sync_crc_annot: Some(12345678),
            last_uid: 5,
            highestmodseq: 9,
            uidvalidity: 1700000000,
            partition: "default".into(),
            acl: "alice\tlrswipkxtecdan\t".into(),
            options: "P".into(),
            foldermodseq: 3,
            ..MailboxState::default()
        }
    }

    #[test]
    fn unchanged_check_lists_every_differing_field() {
        let local = state();
        assert!(mailbox_differences(&local, &local).is_empty());
        let mut replica = state();
        replica.last_uid = 4;
        replica.acl = "alice\tlrs\t".into();
        replica.sync_crc = 8;
        replica.annotations = vec![Annotation {
            entry: "/comment".into(),
            userid: String::new(),
            modseq: 2,
            value: b"x".to_vec(),
        }];
        let fields: Vec<&str> = mailbox_differences(&local, &replica)
            .iter()
            .map(|d| d.field)
            .collect();
        assert_eq!(fields, ["last_uid", "acl", "annotations", "sync_crc"]);
        let d = &mailbox_differences(&local, &replica)[0];
        assert_eq!(d.to_string(), "last_uid local=5 replica=4");
    }

    #[test]
    fn unchanged_check_wildcards_and_ignored_fields() {
        let local = state();
        let mut replica = state();
        // Zero CRCs are wildcards, a zero FOLDERMODSEQ means "not sent", and only
        // the P S D A option letters count.
        replica.sync_crc = 0;
        replica.sync_crc_annot = None;
        replica.foldermodseq = 0;
        replica.options = "PX".into();
        replica.partition = "other".into();
        replica.last_appenddate = 99;
        assert!(mailbox_differences(&local, &replica).is_empty());
        replica.options = "PS".into();
        assert_eq!(mailbox_differences(&local, &replica)[0].field, "options");
    }

    #[test]
    fn sieve_mailboxes_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(StoreConfig::single_dir(dir.path())).unwrap();
        store.create_mailbox("user.alice", None, None).unwrap();
        assert!(!store_has_sieve_mailboxes(&store).unwrap());
        let sieve = MailboxState {
            uniqueid: "s1".into(),
            mboxname: "user.alice.#sieve".into(),
            mboxtype: Some("f".into()),
            uidvalidity: 1,
            partition: "default".into(),
            ..MailboxState::default()
        };
        store.write(|txn| txn.create_mailbox(&sieve)).unwrap();
        assert!(store_has_sieve_mailboxes(&store).unwrap());
        let m = store.mailbox("user.alice.#sieve").unwrap().unwrap();
        assert!(is_sieve_mailbox(&m));
        assert!(!is_sieve_mailbox(
            &store.mailbox("user.alice").unwrap().unwrap()
        ));
    }
}
