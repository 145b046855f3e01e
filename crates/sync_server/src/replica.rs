//! What the replica does with each GET / APPLY / RESTORE (spec §3.4–§3.7), against the
//! mailstore. No sockets here: a command goes in, `* ` data lines and a status come
//! out, so every rule can be tested from byte strings.
//!
//! Where Cyrus aborts or crashes (an append whose file was never staged, a file whose
//! bytes do not hash to its GUID, an unknown partition), this answers with a clear
//! `NO` and changes nothing: all validation happens before the transaction starts
//! (for a big `APPLY MAILBOX`, while its records arrive: [`Replica::stream_records`]).

use std::collections::BTreeSet;

use csync_mailstore::{FileSource, LogEntry, Mailbox, Store, StoreError};
use csync_protocol::command::{
    ApplyCommand, Command, CommandError, GetCommand, RestoreCommand, parse_streamed_mailbox,
};
use csync_protocol::crc::crc_matches;
use csync_protocol::decode::{Body, Decoder, RecordBatch};
use csync_protocol::encode::{Encoder, LiteralStyle};
use csync_protocol::mailbox::{FieldError, MailboxState, Record, Required};
use csync_protocol::response::{DataItem, FetchedFile, SyncStatus, lines};
use csync_protocol::value::Item;
use csync_protocol::{Guid, MailboxAnnotation, SieveScript};

use crate::spool::{Planned, Spool, SpoolError};
use crate::staging::Staging;

/// A failed command: the status the client sees and the detail the log gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: SyncStatus,
    pub detail: String,
}

impl Failure {
    pub fn new(status: SyncStatus, detail: impl Into<String>) -> Self {
        Failure {
            status,
            detail: detail.into(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NoSuchMailbox(_) => SyncStatus::MailboxNonexistent,
            StoreError::NoSuchUser(_) => SyncStatus::InvalidUser,
            StoreError::BadName { .. } | StoreError::UnknownPartition(_) => {
                SyncStatus::BadParameters
            }
            _ => SyncStatus::Unknown,
        };
        Failure::new(status, e.to_string())
    }
}

type Outcome = Result<(), Failure>;

/// What [`Replica::execute`] did.
#[derive(Debug)]
pub enum Executed {
    /// A GET/APPLY/RESTORE: `OK success` or the failure's status line follows.
    Status(Outcome),
    /// A session command with its fixed reply.
    Line(&'static str),
    /// Not a replica command (AUTHENTICATE, STARTTLS, COMPRESS).
    NotMine,
}

/// RECORD items per batch of a streamed `APPLY MAILBOX` (see
/// [`Replica::stream_records`]): what the decoder's arena holds of one at a time.
pub const RECORD_BATCH: usize = 1024;

/// How a streamed `APPLY MAILBOX` line ended ([`Replica::finish_stream`]).
#[derive(Debug)]
pub enum StreamEnd {
    /// The line is not a valid `APPLY MAILBOX`: the reply [`Command::parse`] gives
    /// for the whole line.
    Refused(CommandError),
    /// It was checked and, if `outcome` is Ok, committed: `OK success` or the
    /// failure's status line follows, as for [`Executed::Status`].
    Applied {
        mboxname: String,
        /// RECORD items in the line.
        records: u64,
        outcome: Outcome,
    },
}

/// Where an `APPLY MAILBOX` goes.
#[derive(Clone, Debug)]
struct Target {
    /// The replica's mailbox of that name and uniqueid, updated.
    replica: Option<Mailbox>,
    /// A mailbox of that name but another uniqueid (empty, or any with FORCE),
    /// replaced by a new one.
    replace: Option<i64>,
}

/// An `APPLY MAILBOX` whose RECORD items arrive in batches: each is read and
/// dry-run as it comes, the records to write wait in a spool, and the end of the line
/// decides as [`Replica::apply_mailbox`] would have for the whole line.
#[derive(Debug)]
struct MailboxStream {
    /// The description as of the first batch: the keys before RECORD.
    header: MailboxState,
    /// Decided from the header's MBOXNAME, UNIQUEID and PARTITION, which the whole
    /// line cannot change (the first of a key wins).
    target: Result<Target, Failure>,
    prev_uid: u32,
    /// The first item that does not read as a record: it decides the reply before
    /// anything the store says.
    bad_record: Option<FieldError>,
    /// The first record the dry run refused.
    refused: Option<Failure>,
    /// Records to write, once there is one.
    spool: Option<Spool>,
    /// Items received.
    items: u64,
}

/// Capabilities this replica can enable with `APPLY CAPABILITIES`.
pub const CAPABILITIES: [&str; 1] = ["SIEVE-MAILBOX"];

/// The per-connection replica state.
pub struct Replica {
    pub store: Store,
    pub staging: Staging,
    /// `SIEVE-MAILBOX` enabled on this connection.
    pub sieve_mailbox: bool,
    /// `APPLY FORCE` seen on this connection.
    pub force: bool,
    /// Whether SIEVE-MAILBOX is offered (advertised in the greeting).
    pub offer_sieve_mailbox: bool,
    /// The `APPLY MAILBOX` being streamed in, if any.
    stream: Option<MailboxStream>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("sieve_mailbox", &self.sieve_mailbox)
            .field("force", &self.force)
            .finish()
    }
}

fn data(out: &mut Vec<u8>, item: &DataItem) {
    let mut enc = Encoder::new(LiteralStyle::Synchronizing);
    item.encode(&mut enc);
    out.extend_from_slice(enc.bytes());
}

/// Cyrus lists a user's mailboxes in mailboxes.db order, where the hierarchy
/// separator sorts before every other character.
fn mailbox_order(name: &str) -> Vec<u8> {
    name.bytes()
        .map(|b| if b == b'.' { 0 } else { b })
        .collect()
}

impl Replica {
    pub fn new(store: Store, staging: Staging, offer_sieve_mailbox: bool) -> Self {
        Replica {
            store,
            staging,
            sieve_mailbox: false,
            force: false,
            offer_sieve_mailbox,
            stream: None,
        }
    }

    /// Runs a post-authentication command: data lines go to `out`, the completion
    /// line is left to the caller (it depends on the result). `NOOP`, `RESTART` and
    /// `EXIT` are answered here too, so a transcript can be replayed through this
    /// alone.
    pub fn execute(&mut self, command: Command, out: &mut Vec<u8>) -> Executed {
        match command {
            Command::Get(get) => Executed::Status(self.get(&get, out)),
            Command::Apply(apply) => Executed::Status(self.apply(apply, out)),
            Command::Restore(restore) => Executed::Status(self.restore(restore)),
            Command::Noop => Executed::Line(lines::NOOP),
            Command::Restart => {
                self.restart();
                Executed::Line(lines::RESTART)
            }
            Command::Exit => {
                self.restart();
                Executed::Line(lines::EXIT)
            }
            _ => Executed::NotMine,
        }
    }

    /// `RESTART`/`EXIT`: the staging area goes (and a line being streamed, when the
    /// connection ends).
    pub fn restart(&mut self) {
        self.stream = None;
        self.staging.clear();
    }

    /// How a mailbox is reported in `* MAILBOX` lines (no records).
    fn reported(&self, m: &Mailbox) -> MailboxState {
        let mut state = m.state.clone();
        state.records = None;
        state.since = None;
        if m.is_intermediate() {
            // Intermediates carry synthetic zero values (spec §3.5).
            state.sync_crc = 0;
            state.sync_crc_annot = None;
            state.last_uid = 0;
            state.highestmodseq = 0;
            state.recentuid = 0;
            state.recenttime = 0;
            state.last_appenddate = 0;
            state.pop3_last_login = 0;
            state.pop3_show_after = 0;
            state.options = String::new();
        }
        state
    }

    fn visible(&self, m: &Mailbox) -> bool {
        if m.is_tombstone() {
            return false;
        }
        let sieve = m
            .state
            .mboxtype
            .as_deref()
            .is_some_and(|t| t.starts_with('f'));
        !sieve || self.sieve_mailbox
    }

    pub fn get(&mut self, cmd: &GetCommand, out: &mut Vec<u8>) -> Outcome {
        match cmd {
            GetCommand::User(userid) => self.get_user(userid, out),
            GetCommand::Mailboxes(names) => {
                for name in names {
                    if let Some(m) = self.store.mailbox(name)?
                        && self.visible(&m)
                    {
                        data(out, &DataItem::Mailbox(Box::new(self.reported(&m))));
                    }
                }
                Ok(())
            }
            GetCommand::UniqueIds(ids) => {
                for id in ids {
                    if let Some(m) = self.store.mailbox_by_uniqueid(id)?
                        && self.visible(&m)
                    {
                        data(out, &DataItem::Mailbox(Box::new(self.reported(&m))));
                    }
                }
                Ok(())
            }
            GetCommand::FullMailbox(name) => {
                let m = match self.store.mailbox(name)? {
                    Some(m) if m.is_real() => m,
                    _ => {
                        return Err(Failure::new(
                            SyncStatus::MailboxNonexistent,
                            format!("GET FULLMAILBOX {name}: no such mailbox"),
                        ));
                    }
                };
                let mut state = self.reported(&m);
                let mut records = Vec::new();
                self.store.for_each_record(m.id, 0, |r| {
                    records.push(r.record);
                    Ok(())
                })?;
                state.records = Some(records);
                data(out, &DataItem::Mailbox(Box::new(state)));
                Ok(())
            }
            GetCommand::Meta(userid) => self.meta(userid, out),
            GetCommand::Quota(root) => {
                if let Some(q) = self.store.quota(root)? {
                    data(out, &DataItem::Quota(q));
                }
                Ok(())
            }
            GetCommand::Annotation(name) => {
                for a in self.store.annotations_of(name)? {
                    data(out, &DataItem::Annotation(a));
                }
                Ok(())
            }
            GetCommand::Fetch(req) => {
                let m = match self.store.mailbox_by_uniqueid(&req.uniqueid)? {
                    Some(m) if m.is_real() => m,
                    _ => {
                        return Err(Failure::new(
                            SyncStatus::MailboxNonexistent,
                            format!("GET FETCH: no mailbox with uniqueid {}", req.uniqueid),
                        ));
                    }
                };
                let path = self.store.message_path(&m, req.uid)?;
                let bytes = std::fs::read(&path).map_err(|e| {
                    Failure::new(
                        SyncStatus::MailboxNonexistent,
                        format!("GET FETCH {} uid {}: {e}", m.name(), req.uid),
                    )
                })?;
                let (guid, _) = csync_mailstore::files::hash_reader(&bytes[..])
                    .map_err(|e| Failure::new(SyncStatus::Unknown, e.to_string()))?;
                if guid != req.guid {
                    // The bytes are not what was asked for: NIL, as Cyrus sends.
                    data(out, &DataItem::Message(None));
                    return Ok(());
                }
                let mut enc = Encoder::new(LiteralStyle::Synchronizing);
                DataItem::Message(Some(FetchedFile {
                    partition: req.partition.clone(),
                    guid,
                    size: bytes.len() as u32,
                    index: 0,
                }))
                .encode(&mut enc);
                enc.raw(&bytes).end_line();
                out.extend_from_slice(enc.bytes());
                Ok(())
            }
            GetCommand::FetchSieve { userid, filename } => {
                let name = filename.strip_suffix(".script").unwrap_or(filename);
                match self.store.sieve_script(userid, name)? {
                    Some((content, _, _)) => {
                        data(
                            out,
                            &DataItem::SieveScript(SieveScript {
                                userid: userid.clone(),
                                filename: filename.clone(),
                                last_update: None,
                                content,
                            }),
                        );
                        Ok(())
                    }
                    None => Err(Failure::new(
                        SyncStatus::MailboxNonexistent,
                        format!("no sieve script {filename} for {userid}"),
                    )),
                }
            }
        }
    }

    fn get_user(&mut self, userid: &str, out: &mut Vec<u8>) -> Outcome {
        let mut mailboxes = self.store.user_mailboxes(userid)?;
        let ns = self.store.namespace().clone();
        mailboxes.sort_by_key(|m| (ns.is_deleted(m.name()), mailbox_order(m.name())));
        let mut roots = BTreeSet::new();
        let mut any_real = false;
        for m in &mailboxes {
            if !self.visible(m) {
                continue;
            }
            any_real |= m.is_real();
            if let Some(root) = &m.state.quotaroot {
                roots.insert(root.clone());
            }
            data(out, &DataItem::Mailbox(Box::new(self.reported(m))));
        }
        for root in roots {
            if let Some(q) = self.store.quota(&root)? {
                data(out, &DataItem::Quota(q));
            }
        }
        if any_real {
            self.meta(userid, out)?;
        }
        Ok(())
    }

    fn meta(&mut self, userid: &str, out: &mut Vec<u8>) -> Outcome {
        for seen in self.store.seen(userid)? {
            data(out, &DataItem::Seen(seen));
        }
        let subs = self.store.subscriptions(userid)?;
        if !subs.is_empty() {
            data(out, &DataItem::Lsub(subs));
        }
        if !self.sieve_mailbox {
            for entry in self.store.sieve_entries(userid)? {
                data(out, &DataItem::Sieve(entry));
            }
        }
        Ok(())
    }

    pub fn apply(&mut self, cmd: ApplyCommand, out: &mut Vec<u8>) -> Outcome {
        match cmd {
            ApplyCommand::Reserve(r) => {
                self.store
                    .config()
                    .partition_root(&r.partition)
                    .map_err(|_| {
                        Failure::new(
                            SyncStatus::BadParameters,
                            format!("APPLY RESERVE: unknown partition {}", r.partition),
                        )
                    })?;
                let mut missing = Vec::new();
                for guid in &r.guids {
                    if self.staging.get(&r.partition, guid).is_some() {
                        continue;
                    }
                    let found = self.find_verified(guid, &r.partition, &r.mboxnames)?;
                    match found {
                        Some(path) => self
                            .staging
                            .stage_existing(&r.partition, *guid, &path)
                            .map_err(|e| Failure::new(SyncStatus::Unknown, e.to_string()))?,
                        None => missing.push(*guid),
                    }
                }
                if !missing.is_empty() {
                    data(out, &DataItem::Missing(missing));
                }
                Ok(())
            }
            // The bytes were staged while the line was decoded.
            ApplyCommand::Message(_) => Ok(()),
            ApplyCommand::Mailbox { mailbox, .. } => self.apply_mailbox(*mailbox),
            ApplyCommand::Unmailbox { mboxname, .. } => {
                let m = match self.store.mailbox(&mboxname)? {
                    Some(m) if !m.is_tombstone() => m,
                    _ => {
                        return Err(Failure::new(
                            SyncStatus::MailboxNonexistent,
                            format!("APPLY UNMAILBOX {mboxname}: no such mailbox"),
                        ));
                    }
                };
                let modseq = m.state.highestmodseq + 1;
                self.store.write(|txn| {
                    txn.delete_mailbox(m.id, Some(modseq))?;
                    txn.log(LogEntry::Unmailbox(mboxname.clone()));
                    Ok(())
                })?;
                Ok(())
            }
            ApplyCommand::Rename { rename, .. } => {
                let m = match self.store.mailbox(&rename.old_mboxname)? {
                    Some(m) if !m.is_tombstone() => m,
                    _ => {
                        return Err(Failure::new(
                            SyncStatus::MailboxNonexistent,
                            format!("APPLY RENAME: {} does not exist", rename.old_mboxname),
                        ));
                    }
                };
                if self
                    .store
                    .mailbox(&rename.new_mboxname)?
                    .is_some_and(|x| x.is_real())
                {
                    return Err(Failure::new(
                        SyncStatus::Unknown,
                        format!("APPLY RENAME: {} already exists", rename.new_mboxname),
                    ));
                }
                if m.is_real() {
                    self.store
                        .config()
                        .partition_root(&rename.partition)
                        .map_err(|_| {
                            Failure::new(
                                SyncStatus::BadParameters,
                                format!("APPLY RENAME: unknown partition {}", rename.partition),
                            )
                        })?;
                }
                self.store.write(|txn| {
                    txn.rename_mailbox(m.id, &rename.new_mboxname, &rename.partition)?;
                    if m.is_real() {
                        // A rename is silent (no new modseq), but Cyrus's replica
                        // records it as the folder's last change: FOLDERMODSEQ takes
                        // the current HIGHESTMODSEQ.
                        let mut renamed = txn.mailbox_by_id(m.id)?;
                        renamed.state.foldermodseq = renamed.state.highestmodseq;
                        if let Some(v) = rename.uidvalidity {
                            renamed.state.uidvalidity = v;
                        }
                        txn.update_header(&renamed)?;
                    }
                    txn.log(LogEntry::Rename(
                        rename.old_mboxname.clone(),
                        rename.new_mboxname.clone(),
                    ));
                    txn.log(LogEntry::Mailbox(rename.old_mboxname.clone()));
                    txn.log(LogEntry::Mailbox(rename.new_mboxname.clone()));
                    Ok(())
                })?;
                Ok(())
            }
            ApplyCommand::Expunge(e) => {
                let m = self.store.real_mailbox(&e.mboxname)?;
                if m.state.uniqueid != e.uniqueid {
                    return Err(Failure::new(
                        SyncStatus::MailboxMoved,
                        format!(
                            "APPLY EXPUNGE {}: uniqueid {} is not {}",
                            e.mboxname, e.uniqueid, m.state.uniqueid
                        ),
                    ));
                }
                self.store.write(|txn| {
                    for uid in &e.uids {
                        if let Some(rec) = txn.record(m.id, *uid)? {
                            let mut r = rec.record;
                            if !r.is_expunged() {
                                r.system_flags.insert(csync_protocol::SystemFlags::EXPUNGED);
                                txn.put_record(&m, &r, FileSource::Keep)?;
                            }
                        }
                    }
                    txn.log(LogEntry::Mailbox(e.mboxname.clone()));
                    Ok(())
                })?;
                Ok(())
            }
            ApplyCommand::Seen { userid, seen } => {
                self.store.write(|txn| {
                    txn.set_seen(&userid, &seen)?;
                    txn.log(LogEntry::Seen(userid.clone(), seen.uniqueid.clone()));
                    Ok(())
                })?;
                Ok(())
            }
            ApplyCommand::Sub { userid, mboxname } => self.subscribe(&userid, &mboxname, true),
            ApplyCommand::Unsub { userid, mboxname } => self.subscribe(&userid, &mboxname, false),
            ApplyCommand::Quota(q) => {
                self.store.write(|txn| {
                    txn.set_quota(&q)?;
                    txn.log(LogEntry::Quota(q.root.clone()));
                    Ok(())
                })?;
                Ok(())
            }
            ApplyCommand::Unquota(root) => {
                self.store.write(|txn| {
                    txn.remove_quota(&root)?;
                    txn.log(LogEntry::Quota(root.clone()));
                    Ok(())
                })?;
                Ok(())
            }
            ApplyCommand::Annotation(a) | ApplyCommand::Unannotation(a) => self.annotation(a),
            ApplyCommand::Sieve(script) => {
                // Only `.script` names act; anything else is silently accepted (§3.4.11).
                let Some(name) = script.filename.strip_suffix(".script") else {
                    return Ok(());
                };
                let name = name.to_owned();
                self.store.write(|txn| {
                    txn.put_sieve(
                        &script.userid,
                        &name,
                        &script.content,
                        script.last_update.unwrap_or(0),
                    )?;
                    txn.log(LogEntry::Meta(script.userid.clone()));
                    Ok(())
                })?;
                Ok(())
            }
            ApplyCommand::Unsieve { userid, filename } => {
                let Some(name) = filename.strip_suffix(".script") else {
                    return Ok(());
                };
                let name = name.to_owned();
                self.store.write(|txn| {
                    txn.delete_sieve(&userid, &name)?;
                    txn.log(LogEntry::Meta(userid.clone()));
                    Ok(())
                })?;
                Ok(())
            }
            ApplyCommand::ActivateSieve { userid, filename } => {
                // The compiled form `<name>.bc` names the script: drop the suffix.
                let name = filename.strip_suffix(".bc").unwrap_or(&filename).to_owned();
                self.store.write(|txn| {
                    txn.activate_sieve(&userid, Some(&name))?;
                    txn.log(LogEntry::Meta(userid.clone()));
                    Ok(())
                })?;
                Ok(())
            }
            ApplyCommand::UnactivateSieve { userid } => {
                self.store.write(|txn| {
                    txn.activate_sieve(&userid, None)?;
                    txn.log(LogEntry::Meta(userid.clone()));
                    Ok(())
                })?;
                Ok(())
            }
            ApplyCommand::Unuser { userid, .. } => self.unuser(&userid),
            ApplyCommand::Force => {
                self.force = true;
                Ok(())
            }
            ApplyCommand::Capabilities(wanted) => {
                let enabled: Vec<String> = wanted
                    .iter()
                    .filter(|c| {
                        self.offer_sieve_mailbox
                            && CAPABILITIES.iter().any(|k| k.eq_ignore_ascii_case(c))
                    })
                    .map(|c| c.to_ascii_uppercase())
                    .collect();
                self.sieve_mailbox = enabled.iter().any(|c| c == "SIEVE-MAILBOX");
                // The 3.6 client needs this line even when nothing is enabled.
                data(out, &DataItem::Enabled(enabled));
                Ok(())
            }
        }
    }

    fn subscribe(&mut self, userid: &str, mboxname: &str, subscribed: bool) -> Outcome {
        self.store.write(|txn| {
            txn.set_subscribed(userid, mboxname, subscribed)?;
            txn.log(LogEntry::Sub(userid.to_owned(), mboxname.to_owned()));
            Ok(())
        })?;
        Ok(())
    }

    fn annotation(&mut self, a: MailboxAnnotation) -> Outcome {
        if !a.entry.starts_with('/') {
            return Err(Failure::new(
                SyncStatus::Unknown,
                format!("annotation entry {:?} is not acceptable", a.entry),
            ));
        }
        let id = if a.mboxname.is_empty() {
            0
        } else {
            self.store.real_mailbox(&a.mboxname)?.id
        };
        self.store.write(|txn| {
            txn.set_mailbox_annotation(
                id,
                &a.entry,
                &a.userid,
                a.value.as_deref().map(|v| (v, 0)),
            )?;
            txn.log(if a.mboxname.is_empty() {
                LogEntry::Annotation(String::new())
            } else {
                LogEntry::Mailbox(a.mboxname.clone())
            });
            Ok(())
        })?;
        Ok(())
    }

    fn unuser(&mut self, userid: &str) -> Outcome {
        if userid.is_empty() {
            return Ok(());
        }
        // Cyrus deletes the user's tree only (`mboxlist_usermboxtree` without
        // MBOXTREE_DELETED/TOMBSTONES): the user's `DELETED.*` mailboxes stay, as they
        // do on the master, which sends UNUSER right after renaming the INBOX to one.
        let namespace = self.store.namespace().clone();
        let mut mailboxes = self.store.user_mailboxes(userid)?;
        mailboxes.retain(|m| !m.is_tombstone() && namespace.is_in_user_tree(userid, m.name()));
        mailboxes.sort_by_key(|m| std::cmp::Reverse(m.name().len()));
        let inbox = namespace.inbox(userid);
        self.store.write(|txn| {
            for m in &mailboxes {
                txn.delete_mailbox(m.id, None)?;
            }
            txn.purge_user_metadata(userid)?;
            txn.remove_quota(&inbox)?;
            txn.log(LogEntry::Unuser(userid.to_owned()));
            Ok(())
        })?;
        Ok(())
    }

    /// A file with this GUID among the named replica mailboxes (same partition first),
    /// whose bytes really hash to the GUID.
    fn find_verified(
        &self,
        guid: &Guid,
        partition: &str,
        mboxnames: &[String],
    ) -> Result<Option<std::path::PathBuf>, Failure> {
        let Some(path) = self.store.find_guid(guid, partition, Some(mboxnames))? else {
            return Ok(None);
        };
        match csync_mailstore::files::hash_file(&path) {
            Ok((computed, _)) if computed == *guid => Ok(Some(path)),
            _ => Ok(None),
        }
    }

    /// `APPLY MAILBOX` (spec §3.4.3) of a whole line, validated completely before
    /// anything changes. A line whose RECORD items were streamed goes through
    /// [`Replica::stream_records`] and [`Replica::finish_stream`] instead, to the same
    /// checks in the same order.
    fn apply_mailbox(&mut self, mut master: MailboxState) -> Outcome {
        let name = master.mboxname.clone();
        let _span = tracing::info_span!("mailbox", mailbox = %name).entered();
        self.check_sieve(&master)?;
        if master.is_placeholder() {
            return self.apply_placeholder(master);
        }
        let target = self.target(&master)?;
        self.check_gates(&master, &target)?;
        // Dry run over the records: what is an update, what an append, and is every
        // append's file here and intact? (Taken, not cloned: `master` is cloned below.)
        let records = master.records.take().unwrap_or_default();
        let mut plan = Vec::with_capacity(records.len());
        let mut prev_uid = 0;
        for rec in records {
            if let Some(planned) = self.check_record(&master, &target, &mut prev_uid, rec)? {
                plan.push(planned);
            }
        }
        self.commit_mailbox(&master, &target, plan.into_iter().map(Ok))
    }

    /// A `#sieve` mailbox (type `f`) only with SIEVE-MAILBOX enabled.
    fn check_sieve(&self, master: &MailboxState) -> Outcome {
        let is_sieve = master
            .mboxtype
            .as_deref()
            .is_some_and(|t| t.starts_with('f'));
        if is_sieve && !self.sieve_mailbox {
            return Err(Failure::new(
                SyncStatus::BadParameters,
                format!("{}: a #sieve mailbox needs SIEVE-MAILBOX", master.mboxname),
            ));
        }
        Ok(())
    }

    /// Decides between update, create and replace. Reads only MBOXNAME, UNIQUEID and
    /// PARTITION (and FORCE), which a streamed line has before its records.
    fn target(&self, master: &MailboxState) -> Result<Target, Failure> {
        let name = &master.mboxname;
        self.store
            .config()
            .partition_root(&master.partition)
            .map_err(|_| {
                Failure::new(
                    SyncStatus::BadParameters,
                    format!("{name}: unknown partition {}", master.partition),
                )
            })?;
        let existing = self.store.mailbox(name)?.filter(Mailbox::is_real);
        match existing {
            None => {
                if let Some(other) = self.store.mailbox_by_uniqueid(&master.uniqueid)?
                    && other.is_real()
                {
                    return Err(Failure::new(
                        SyncStatus::MailboxMoved,
                        format!(
                            "{name}: uniqueid {} belongs to {}",
                            master.uniqueid,
                            other.name()
                        ),
                    ));
                }
                Ok(Target {
                    replica: None,
                    replace: None,
                })
            }
            Some(m) if m.state.uniqueid != master.uniqueid => {
                if self.force || m.state.last_uid == 0 {
                    Ok(Target {
                        replica: None,
                        replace: Some(m.id),
                    })
                } else {
                    Err(Failure::new(
                        SyncStatus::MailboxMoved,
                        format!(
                            "{name}: replica has uniqueid {}, master {}",
                            m.state.uniqueid, master.uniqueid
                        ),
                    ))
                }
            }
            Some(m) => Ok(Target {
                replica: Some(m),
                replace: None,
            }),
        }
    }

    /// The mailbox-level checks between the target and the records: SINCE_MODSEQ,
    /// the type, and a master that is behind the replica.
    fn check_gates(&self, master: &MailboxState, target: &Target) -> Outcome {
        let name = &master.mboxname;
        let force = self.force;
        if let (Some(since), Some(r)) = (&master.since, &target.replica)
            && since.modseq != 0
        {
            let crc_annot = r.state.sync_crc_annot.unwrap_or(0);
            if since.modseq != r.state.highestmodseq
                || !crc_matches(since.crc, r.state.sync_crc)
                || !crc_matches(since.crc_annot, crc_annot)
            {
                return Err(Failure::new(
                    SyncStatus::SyncChanged,
                    format!(
                        "{name}: SINCE_MODSEQ {} / CRC {} / {} but replica is at {} / {} / {}",
                        since.modseq,
                        since.crc,
                        since.crc_annot,
                        r.state.highestmodseq,
                        r.state.sync_crc,
                        crc_annot
                    ),
                ));
            }
        }
        if let Some(r) = &target.replica {
            if r.state.mboxtype != master.mboxtype {
                return Err(Failure::new(
                    SyncStatus::Unknown,
                    format!(
                        "{name}: type {:?} on the replica, {:?} on the master",
                        r.state.mboxtype, master.mboxtype
                    ),
                ));
            }
            if !force {
                let lower = |what: &str, master: u64, replica: u64| -> Outcome {
                    if master < replica {
                        Err(Failure::new(
                            SyncStatus::SyncChecksum,
                            format!(
                                "{name}: master {what} {master} is below the replica's {replica}"
                            ),
                        ))
                    } else {
                        Ok(())
                    }
                };
                lower("HIGHESTMODSEQ", master.highestmodseq, r.state.highestmodseq)?;
                lower(
                    "UIDVALIDITY",
                    u64::from(master.uidvalidity),
                    u64::from(r.state.uidvalidity),
                )?;
                lower(
                    "LAST_UID",
                    u64::from(master.last_uid),
                    u64::from(r.state.last_uid),
                )?;
            }
        }
        Ok(())
    }

    /// The dry run of one record, in uid order (`prev_uid` carries the order check):
    /// the record to write, `None` when there is nothing to store, or why the whole
    /// mailbox is refused. Reads MBOXNAME and PARTITION of `master` only.
    fn check_record(
        &self,
        master: &MailboxState,
        target: &Target,
        prev_uid: &mut u32,
        rec: Record,
    ) -> Result<Option<Planned>, Failure> {
        let name = &master.mboxname;
        let force = self.force;
        if rec.uid <= *prev_uid {
            return Err(Failure::new(
                SyncStatus::ProtocolError,
                format!(
                    "{name}: records not in ascending uid order at uid {}",
                    rec.uid
                ),
            ));
        }
        *prev_uid = rec.uid;
        if rec.guid.is_null() {
            return Err(Failure::new(
                SyncStatus::MailboxNotSupported,
                format!("{name}: uid {} has no GUID", rec.uid),
            ));
        }
        let replica_last_uid = target.replica.as_ref().map_or(0, |m| m.state.last_uid);
        let old = match &target.replica {
            Some(r) => self.store.record(r.id, rec.uid)?,
            None => None,
        };
        match old {
            Some(old) => {
                let o = &old.record;
                if o.is_expunged() && rec.is_expunged() {
                    return Ok(None);
                }
                if o.guid != rec.guid {
                    return Err(Failure::new(
                        SyncStatus::SyncChecksum,
                        format!(
                            "{name}: uid {} has GUID {} here, {} on the master",
                            rec.uid, o.guid, rec.guid
                        ),
                    ));
                }
                if !force && o.modseq > rec.modseq {
                    return Err(Failure::new(
                        SyncStatus::SyncChecksum,
                        format!(
                            "{name}: uid {} modseq {} here is above the master's {}",
                            rec.uid, o.modseq, rec.modseq
                        ),
                    ));
                }
                if o.is_expunged() && !rec.is_expunged() {
                    return Err(Failure::new(
                        SyncStatus::SyncChecksum,
                        format!(
                            "{name}: uid {} is expunged here but not on the master",
                            rec.uid
                        ),
                    ));
                }
                Ok(Some(Planned {
                    record: rec,
                    link: false,
                }))
            }
            None if rec.uid <= replica_last_uid => {
                if !rec.is_expunged() {
                    return Err(Failure::new(
                        SyncStatus::SyncChecksum,
                        format!(
                            "{name}: uid {} is at or below LAST_UID {replica_last_uid} but missing here",
                            rec.uid
                        ),
                    ));
                }
                // An expunged record we never had: nothing to store.
                Ok(None)
            }
            None => {
                let staged = self.staging.get(&master.partition, &rec.guid).is_some();
                if !staged && !rec.is_expunged() {
                    let detail = match self.staging.was_corrupt(&rec.guid) {
                        Some(computed) => format!(
                            "{name}: uid {}: uploaded bytes hash to {computed}, not {}",
                            rec.uid, rec.guid
                        ),
                        None => format!(
                            "{name}: uid {}: message {} was neither uploaded nor reserved",
                            rec.uid, rec.guid
                        ),
                    };
                    return Err(Failure::new(SyncStatus::ProtocolError, detail));
                }
                Ok(Some(Planned {
                    record: rec,
                    link: staged,
                }))
            }
        }
    }

    /// Commits a checked mailbox: header, ACL, annotations and `records`, in one
    /// transaction; then the CRC check. `records` is read inside the transaction, one
    /// at a time, so a spooled mailbox is never whole in memory.
    fn commit_mailbox(
        &mut self,
        master: &MailboxState,
        target: &Target,
        records: impl Iterator<Item = Result<Planned, SpoolError>>,
    ) -> Outcome {
        let name = master.mboxname.clone();
        let replica_id = target.replica.as_ref().map(|m| m.id);
        let replace = target.replace;
        let staging = &self.staging;
        let committed: csync_mailstore::Mailbox = self.store.write(|txn| {
            if let Some(old) = replace {
                txn.delete_mailbox(old, None)?;
            }
            let mut m = match replica_id {
                Some(id) => txn.mailbox_by_id(id)?,
                None => {
                    let mut create = master.clone();
                    create.records = None;
                    create.annotations = Vec::new();
                    txn.create_mailbox(&create)?
                }
            };
            let mut appended = false;
            for planned in records {
                let Planned { record, link } =
                    planned.map_err(|e| StoreError::Invalid(e.to_string()))?;
                if link {
                    // The dry run saw it staged; nothing unstages within a line.
                    let path = staging
                        .staged_path(&master.partition, &record.guid)
                        .ok_or_else(|| {
                            StoreError::Invalid(format!(
                                "{name}: uid {}: staged message {} is gone",
                                record.uid, record.guid
                            ))
                        })?;
                    appended = true;
                    txn.put_record(&m, &record, FileSource::Link(&path))?;
                } else {
                    txn.put_record(&m, &record, FileSource::Keep)?;
                }
            }
            let s = &mut m.state;
            s.acl = master.acl.clone();
            s.options = master.options.clone();
            s.uidvalidity = master.uidvalidity;
            s.last_uid = master.last_uid;
            s.highestmodseq = master.highestmodseq;
            s.recentuid = master.recentuid;
            s.recenttime = master.recenttime;
            s.last_appenddate = master.last_appenddate;
            s.pop3_last_login = master.pop3_last_login;
            s.pop3_show_after = master.pop3_show_after;
            s.createdmodseq = master.createdmodseq;
            s.foldermodseq = if master.foldermodseq != 0 {
                master.foldermodseq
            } else {
                master.highestmodseq
            };
            s.xconvmodseq = master.xconvmodseq;
            s.raclmodseq = master.raclmodseq;
            s.quotaroot = txn.quota_root_for(&name)?;
            txn.update_header(&m)?;
            txn.set_mailbox_annotations(m.id, &master.annotations)?;
            txn.log(if appended {
                LogEntry::Append(name.clone())
            } else {
                LogEntry::Mailbox(name.clone())
            });
            txn.mailbox_by_id(m.id)
        })?;
        // Cyrus checks the CRCs after committing, and so the changes stay even when
        // they do not match (the client then repairs from GET FULLMAILBOX).
        let ours = (
            committed.state.sync_crc,
            committed.state.sync_crc_annot.unwrap_or(0),
        );
        let theirs = (master.sync_crc, master.sync_crc_annot.unwrap_or(0));
        if !crc_matches(theirs.0, ours.0) || !crc_matches(theirs.1, ours.1) {
            return Err(Failure::new(
                SyncStatus::SyncChecksum,
                format!(
                    "{name}: master SYNC_CRC/SYNC_CRC_ANNOT {}/{} but replica {}/{}",
                    theirs.0, theirs.1, ours.0, ours.1
                ),
            ));
        }
        Ok(())
    }

    /// The decoder paused with a batch of an `APPLY MAILBOX`'s RECORD items
    /// ([`csync_protocol::Feed::records`]). At the first batch this decides whether
    /// the line can be applied as it streams: it can when every key a Cyrus client
    /// writes before RECORD is there and reads (the keys before RECORD decode as an
    /// `APPLY MAILBOX` on their own) and the mailbox is not an intermediate or a
    /// tombstone. Otherwise the decoder is told to keep the line whole and it goes
    /// the usual way, so an unusual key order costs memory, never correctness. Then
    /// every item of the batch is read and dry-run, and the records to write go to
    /// the spool.
    pub fn stream_records(&mut self, decoder: &mut Decoder) {
        if decoder.records_released() == 0 {
            // The first batch of a line: whatever an earlier line left is stale.
            self.stream = None;
            let started = decoder
                .record_batch()
                .and_then(|batch| self.start_stream(batch.mailbox));
            match started {
                Some(stream) => self.stream = Some(stream),
                None => {
                    decoder.keep_records();
                    return;
                }
            }
        }
        let (Some(mut stream), Some(batch)) = (self.stream.take(), decoder.record_batch()) else {
            return;
        };
        self.take_batch(&mut stream, batch);
        self.stream = Some(stream);
    }

    /// Whether the line being received is streamed into this replica.
    pub fn is_streaming(&self) -> bool {
        self.stream.is_some()
    }

    /// Drops a streamed line that will not complete (connection lost). Nothing of it
    /// was written to the store.
    pub fn abort_stream(&mut self) {
        self.stream = None;
    }

    /// A line is complete. When it is a streamed `APPLY MAILBOX`, this finishes it and
    /// says how; `None` means the line is for the usual path
    /// ([`Command::parse`], [`Replica::execute`]): it was not streamed, or it is
    /// malformed (then the stream is dropped, and the usual path gives Cyrus's reply).
    pub fn finish_stream(&mut self, decoder: &Decoder) -> Option<StreamEnd> {
        let line = decoder.line()?;
        let mut stream = self.stream.take()?;
        if matches!(line.body, Body::Malformed(_)) {
            return None;
        }
        if let Some(tail) = decoder.record_batch() {
            self.take_batch(&mut stream, tail);
        }
        let bad_record = stream.bad_record.take().map_or(Ok(()), Err);
        let master = match parse_streamed_mailbox(line, bad_record) {
            Ok(master) => master,
            Err(refused) => return Some(StreamEnd::Refused(refused)),
        };
        let mboxname = master.mboxname.clone();
        let records = stream.items;
        let outcome = self.apply_streamed(master, stream);
        Some(StreamEnd::Applied {
            mboxname,
            records,
            outcome,
        })
    }

    fn start_stream(&self, mailbox: Item<'_>) -> Option<MailboxStream> {
        let header = MailboxState::decode_streamed(mailbox, Required::Apply, Ok(())).ok()?;
        if header.is_placeholder() {
            return None;
        }
        let _span = tracing::info_span!("mailbox", mailbox = %header.mboxname).entered();
        let target = self.target(&header);
        Some(MailboxStream {
            header,
            target,
            prev_uid: 0,
            bad_record: None,
            refused: None,
            spool: None,
            items: 0,
        })
    }

    /// Reads and dry-runs one batch. After the first item that does not read as a
    /// record nothing else matters (that error is the reply); after the first refused
    /// record only reading does.
    fn take_batch(&mut self, stream: &mut MailboxStream, batch: RecordBatch<'_>) {
        for (i, item) in batch.records.children().enumerate() {
            stream.items += 1;
            if stream.bad_record.is_some() {
                continue;
            }
            let record = match Record::decode_at(item, batch.first_index + i) {
                Ok(record) => record,
                Err(e) => {
                    stream.bad_record = Some(e);
                    continue;
                }
            };
            if stream.refused.is_some() {
                continue;
            }
            let Ok(target) = &stream.target else {
                continue;
            };
            let checked = self.check_record(&stream.header, target, &mut stream.prev_uid, record);
            let spooled = match checked {
                Ok(Some(planned)) => self.spool(stream, &planned),
                Ok(None) => Ok(()),
                Err(f) => Err(f),
            };
            if let Err(f) = spooled {
                stream.refused = Some(f);
            }
        }
    }

    fn spool(&mut self, stream: &mut MailboxStream, planned: &Planned) -> Outcome {
        let spool_failure = |e: &dyn std::fmt::Display| {
            Failure::new(
                SyncStatus::Unknown,
                format!("{}: {e}", stream.header.mboxname),
            )
        };
        if stream.spool.is_none() {
            let file = self
                .staging
                .spool_file(&stream.header.partition)
                .map_err(|e| spool_failure(&e))?;
            stream.spool = Some(Spool::new(file));
        }
        if let Some(spool) = &mut stream.spool {
            spool.push(planned).map_err(|e| spool_failure(&e))?;
        }
        Ok(())
    }

    /// The end of a streamed `APPLY MAILBOX`: the checks of [`Replica::apply_mailbox`]
    /// in its order, with the keys of the whole line (a key after RECORD counts as it
    /// would there), then the records' verdict, then the commit from the spool.
    fn apply_streamed(&mut self, master: MailboxState, stream: MailboxStream) -> Outcome {
        let _span = tracing::info_span!("mailbox", mailbox = %master.mboxname).entered();
        // The first key of a name wins, so what the target was decided from is the
        // same in the whole line.
        debug_assert_eq!(master.mboxname, stream.header.mboxname);
        debug_assert_eq!(master.uniqueid, stream.header.uniqueid);
        debug_assert_eq!(master.partition, stream.header.partition);
        self.check_sieve(&master)?;
        if master.is_placeholder() {
            return self.apply_placeholder(master);
        }
        let target = stream.target?;
        self.check_gates(&master, &target)?;
        if let Some(refused) = stream.refused {
            return Err(refused);
        }
        match stream.spool {
            Some(spool) => {
                let records = spool.into_reader().map_err(|e| {
                    Failure::new(SyncStatus::Unknown, format!("{}: {e}", master.mboxname))
                })?;
                self.commit_mailbox(&master, &target, records)
            }
            None => self.commit_mailbox(&master, &target, std::iter::empty()),
        }
    }

    /// An intermediate or tombstone: only the mailbox-list entry is written.
    fn apply_placeholder(&mut self, master: MailboxState) -> Outcome {
        let name = master.mboxname.clone();
        self.store.write(|txn| {
            if let Some(existing) = txn.mailbox(&name)? {
                txn.delete_mailbox(existing.id, None)?;
            }
            let mut entry = master.clone();
            entry.records = None;
            entry.annotations = Vec::new();
            entry.foldermodseq = master.highestmodseq;
            txn.create_mailbox(&entry)?;
            txn.log(LogEntry::Mailbox(name.clone()));
            Ok(())
        })?;
        Ok(())
    }

    pub fn restore(&mut self, cmd: RestoreCommand) -> Outcome {
        let RestoreCommand::Mailbox { mailbox, .. } = cmd;
        let master = *mailbox;
        let name = master.mboxname.clone();
        let existing = self.store.mailbox(&name)?.filter(Mailbox::is_real);
        let records = master.records.clone().unwrap_or_default();
        // Every non-expunged record needs its staged file before anything changes.
        let mut files = Vec::new();
        for rec in &records {
            if rec.is_expunged() {
                continue;
            }
            let partition = existing
                .as_ref()
                .map(|m| m.state.partition.clone())
                .unwrap_or_else(|| {
                    if master.partition.is_empty() {
                        self.store.config().default_partition.clone()
                    } else {
                        master.partition.clone()
                    }
                });
            match self.staging.get(&partition, &rec.guid) {
                Some(p) => files.push((rec.clone(), p)),
                None => {
                    return Err(Failure::new(
                        SyncStatus::ProtocolError,
                        format!("RESTORE {name}: message {} was not staged", rec.guid),
                    ));
                }
            }
        }
        let keep_ids =
            !master.uniqueid.is_empty() && master.highestmodseq != 0 && master.uidvalidity != 0;
        self.store.write(|txn| {
            let mut m = match existing.as_ref() {
                Some(m) => txn.mailbox_by_id(m.id)?,
                None => {
                    let mut create = master.clone();
                    create.records = None;
                    if !keep_ids {
                        create.uniqueid = csync_mailstore::local::new_uniqueid();
                        create.uidvalidity = csync_mailstore::local::now() as u32;
                        create.highestmodseq = 0;
                    }
                    if create.partition.is_empty() {
                        create.partition = txn.config().default_partition.clone();
                    }
                    txn.create_mailbox(&create)?
                }
            };
            for (rec, path) in &files {
                let mut r = rec.clone();
                r.uid = m.state.last_uid + 1;
                m.state.highestmodseq += 1;
                r.modseq = m.state.highestmodseq;
                txn.put_record(&m, &r, FileSource::Link(path))?;
                m.state.last_uid = r.uid;
            }
            txn.update_header(&m)?;
            txn.log(LogEntry::Mailbox(name.clone()));
            Ok(())
        })?;
        Ok(())
    }
}
