//! The full update (spec §4.6): when the replica's copy of a mailbox has diverged
//! (CHECKSUM twice, or records purged here since its modseq), compare every record
//! with `GET FULLMAILBOX` and change the master so that the next push is accepted
//! without losing a message on either side:
//!
//! * same uid, different message (split brain): both are kept. The master's is
//!   re-appended under a new uid, the replica's is fetched, appended here and expunged
//!   there;
//! * same message, different state: the newer change wins (the replica's only when its
//!   modseq is higher and its last update not older), and the record is rewritten with
//!   a new modseq so the next push carries it;
//! * messages only on the replica are fetched and kept; records the replica would
//!   refuse are renumbered above its last uid.

use std::collections::BTreeMap;

use csync_mailstore::FileSource;
use csync_protocol::command::{ApplyCommand, Command, Expunge, FetchRequest, GetCommand};
use csync_protocol::mailbox::{MailboxState, Record, SystemFlags};
use csync_protocol::response::{DataItem, SyncStatus};
use tracing::{info, warn};

use crate::sync::{SyncError, SyncResult, Syncer};

/// What to do to the local mailbox, decided before anything changes.
#[derive(Debug)]
enum Action {
    /// Rewrite a record with these fields and a new modseq.
    Rewrite(Record),
    /// Re-append this record's message under a new uid and expunge the old uid.
    Renumber(Record),
    /// Append the replica's message (fetched); `same_uid` keeps its uid.
    CopyBack { record: Record, same_uid: bool },
}

pub fn full_update(s: &mut Syncer<'_>, name: &str) -> SyncResult<()> {
    let reply = s
        .conn
        .command(&Command::Get(GetCommand::FullMailbox(name.to_owned())))?;
    if reply.status() != SyncStatus::Ok {
        return Err(SyncError::Replica {
            command: "GET FULLMAILBOX".into(),
            target: name.to_owned(),
            status: reply.status(),
            reply: reply.text(),
        });
    }
    let Some(replica) = reply.data.into_iter().find_map(|d| match d {
        DataItem::Mailbox(m) => Some(*m),
        _ => None,
    }) else {
        return Err(SyncError::Again(format!(
            "{name}: GET FULLMAILBOX sent no mailbox"
        )));
    };
    let m = s.store.real_mailbox(name)?;
    let mut local_records: BTreeMap<u32, Record> = BTreeMap::new();
    s.store.for_each_record(m.id, 0, |r| {
        local_records.insert(r.record.uid, r.record);
        Ok(())
    })?;
    let remote: BTreeMap<u32, Record> = replica
        .records
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.uid, r))
        .collect();
    let plan = plan(&m.state, m.deletedmodseq, &replica, &local_records, &remote);
    let (actions, expunge_remote) = plan;
    info!(
        actions = actions.len(),
        expunge_on_replica = expunge_remote.len(),
        "repair plan"
    );
    // Fetch what comes back from the replica before changing anything.
    let mut fetched: Vec<(Record, bool, Vec<u8>)> = Vec::new();
    for action in &actions {
        if let Action::CopyBack { record, same_uid } = action {
            let reply = s
                .conn
                .command(&Command::Get(GetCommand::Fetch(FetchRequest {
                    mboxname: replica.mboxname.clone(),
                    partition: replica.partition.clone(),
                    uniqueid: replica.uniqueid.clone(),
                    guid: record.guid,
                    uid: record.uid,
                })))?;
            if reply.status() != SyncStatus::Ok {
                warn!(
                    uid = record.uid,
                    "replica could not send its message: {}",
                    reply.text()
                );
                continue;
            }
            let body = reply.data.iter().find_map(|d| match d {
                DataItem::Message(Some(f)) => reply.files.get(f.index).cloned(),
                _ => None,
            });
            match body {
                Some(bytes) => fetched.push((record.clone(), *same_uid, bytes)),
                None => warn!(
                    uid = record.uid,
                    "replica's copy is damaged (NIL); not copied back"
                ),
            }
        }
    }
    let replica_last_uid = replica.last_uid;
    let replica_modseq = replica.highestmodseq;
    let replica_uidvalidity = replica.uidvalidity;
    let adopt_annotations = replica.highestmodseq > m.state.highestmodseq;
    let replica_annotations = replica.annotations.clone();
    let mbox = name.to_owned();
    s.store.write(|txn| {
        let mut m = txn.mailbox_by_id(m.id)?;
        m.state.uidvalidity = m.state.uidvalidity.max(replica_uidvalidity);
        m.state.highestmodseq = m.state.highestmodseq.max(replica_modseq);
        let mut next_uid = m.state.last_uid.max(replica_last_uid) + 1;
        let dir = txn.mailbox_dir(&m)?;
        let bump = |m: &mut csync_mailstore::Mailbox| {
            m.state.highestmodseq += 1;
            m.state.highestmodseq
        };
        for action in &actions {
            match action {
                Action::Rewrite(record) => {
                    let mut r = record.clone();
                    r.modseq = bump(&mut m);
                    txn.put_record(&m, &r, FileSource::Keep)?;
                }
                Action::Renumber(record) => {
                    let old_path = csync_mailstore::files::message_path(&dir, record.uid);
                    let mut moved = record.clone();
                    moved.uid = next_uid;
                    next_uid += 1;
                    moved.modseq = bump(&mut m);
                    txn.put_record(&m, &moved, FileSource::Link(&old_path))?;
                    let mut old = record.clone();
                    old.system_flags.insert(SystemFlags::EXPUNGED);
                    old.modseq = bump(&mut m);
                    txn.put_record(&m, &old, FileSource::Keep)?;
                }
                Action::CopyBack { .. } => {}
            }
        }
        for (record, same_uid, bytes) in &fetched {
            let mut r = record.clone();
            if !*same_uid {
                r.uid = next_uid;
                next_uid += 1;
            }
            r.modseq = bump(&mut m);
            txn.put_record(&m, &r, FileSource::Reader(Box::new(&bytes[..])))?;
            next_uid = next_uid.max(r.uid + 1);
        }
        m.state.last_uid = m.state.last_uid.max(next_uid - 1).max(replica_last_uid);
        if adopt_annotations {
            txn.set_mailbox_annotations(m.id, &replica_annotations)?;
        }
        txn.update_header(&m)?;
        txn.log(csync_mailstore::LogEntry::Mailbox(mbox.clone()));
        Ok(())
    })?;
    if !expunge_remote.is_empty() {
        let reply = s
            .conn
            .command(&Command::Apply(ApplyCommand::Expunge(Expunge {
                mboxname: replica.mboxname.clone(),
                uniqueid: replica.uniqueid.clone(),
                uids: expunge_remote,
            })))?;
        if reply.status() != SyncStatus::Ok {
            return Err(SyncError::Replica {
                command: "APPLY EXPUNGE".into(),
                target: name.to_owned(),
                status: reply.status(),
                reply: reply.text(),
            });
        }
    }
    Ok(())
}

/// Decides the repair (§4.6 step 3) without touching anything.
fn plan(
    local: &MailboxState,
    deletedmodseq: u64,
    replica: &MailboxState,
    mine: &BTreeMap<u32, Record>,
    theirs: &BTreeMap<u32, Record>,
) -> (Vec<Action>, Vec<u32>) {
    let mut actions = Vec::new();
    let mut expunge_remote = Vec::new();
    let replica_max_uid = theirs.keys().next_back().copied().unwrap_or(0);
    let mut uids: Vec<u32> = mine.keys().chain(theirs.keys()).copied().collect();
    uids.sort_unstable();
    uids.dedup();
    for uid in uids {
        match (mine.get(&uid), theirs.get(&uid)) {
            (Some(l), Some(r)) => {
                if l.is_expunged() && r.is_expunged() {
                    continue;
                }
                if l.guid != r.guid {
                    // Split brain: keep both, the lower GUID first.
                    let mut pair: Vec<Action> = Vec::new();
                    if !l.is_expunged() {
                        pair.push(Action::Renumber(l.clone()));
                    }
                    if !r.is_expunged() {
                        pair.push(Action::CopyBack {
                            record: r.clone(),
                            same_uid: false,
                        });
                        expunge_remote.push(uid);
                    }
                    pair.sort_by_key(|a| match a {
                        Action::Renumber(x) | Action::Rewrite(x) => x.guid,
                        Action::CopyBack { record, .. } => record.guid,
                    });
                    actions.extend(pair);
                    continue;
                }
                if same_state(l, r) {
                    continue;
                }
                let mut merged = l.clone();
                if l.is_expunged() {
                    // Stays expunged; rewritten so the push overwrites the replica.
                } else if r.is_expunged() {
                    merged.system_flags.insert(SystemFlags::EXPUNGED);
                } else if r.modseq > l.modseq && r.last_updated >= l.last_updated {
                    merged.system_flags = r.system_flags;
                    merged.user_flags = r.user_flags.clone();
                    merged.thrid = r.thrid;
                    merged.last_updated = r.last_updated;
                }
                actions.push(Action::Rewrite(merged));
            }
            (Some(l), None) => {
                if uid <= replica.last_uid || uid < replica_max_uid {
                    if !l.is_expunged() {
                        actions.push(Action::Renumber(l.clone()));
                    }
                } else if l.modseq <= replica.highestmodseq {
                    actions.push(Action::Rewrite(l.clone()));
                }
            }
            (None, Some(r)) => {
                if r.is_expunged() {
                    continue;
                }
                if uid <= local.last_uid {
                    if r.modseq < deletedmodseq {
                        expunge_remote.push(uid);
                    } else {
                        actions.push(Action::CopyBack {
                            record: r.clone(),
                            same_uid: false,
                        });
                        expunge_remote.push(uid);
                    }
                } else {
                    actions.push(Action::CopyBack {
                        record: r.clone(),
                        same_uid: true,
                    });
                }
            }
            (None, None) => {}
        }
    }
    (actions, expunge_remote)
}

fn same_state(a: &Record, b: &Record) -> bool {
    a.modseq == b.modseq
        && a.last_updated == b.last_updated
        && a.internaldate == b.internaldate
        && a.system_flags == b.system_flags
        && a.user_flags
            .iter()
            .map(|f| f.to_ascii_lowercase())
            .collect::<Vec<_>>()
            == b.user_flags
                .iter()
                .map(|f| f.to_ascii_lowercase())
                .collect::<Vec<_>>()
        && a.thrid == b.thrid
        && a.savedate == b.savedate
        && a.createdmodseq == b.createdmodseq
        && a.annotations == b.annotations
}

#[cfg(test)]
mod tests {
    use super::*;
    use csync_protocol::Guid;

    fn rec(uid: u32, modseq: u64, guid: u8, flags: SystemFlags) -> Record {
        Record {
            uid,
            modseq,
            last_updated: 100 + modseq,
            system_flags: flags,
            guid: Guid([guid; 20]),
            size: 10,
            ..Record::default()
        }
    }

    fn state(last_uid: u32, modseq: u64) -> MailboxState {
        MailboxState {
            last_uid,
            highestmodseq: modseq,
            ..MailboxState::default()
        }
    }

    #[test]
    fn split_brain_keeps_both_messages() {
        let mine = BTreeMap::from([(1, rec(1, 2, 1, SystemFlags::empty()))]);
        let theirs = BTreeMap::from([(1, rec(1, 2, 2, SystemFlags::empty()))]);
        let (actions, expunge) = plan(&state(1, 2), 0, &state(1, 2), &mine, &theirs);
        assert!(matches!(actions[0], Action::Renumber(ref r) if r.guid == Guid([1; 20])));
        assert!(
            matches!(actions[1], Action::CopyBack { ref record, same_uid: false } if record.guid == Guid([2; 20]))
        );
        assert_eq!(expunge, vec![1]);
    }

    #[test]
    fn newer_replica_flags_win_older_lose() {
        let mine = BTreeMap::from([(1, rec(1, 5, 1, SystemFlags::SEEN))]);
        let theirs = BTreeMap::from([(1, rec(1, 7, 1, SystemFlags::FLAGGED))]);
        let (actions, _) = plan(&state(1, 5), 0, &state(1, 7), &mine, &theirs);
        assert!(
            matches!(&actions[0], Action::Rewrite(r) if r.system_flags == SystemFlags::FLAGGED)
        );
        let theirs_old = BTreeMap::from([(1, rec(1, 4, 1, SystemFlags::FLAGGED))]);
        let (actions, _) = plan(&state(1, 5), 0, &state(1, 5), &mine, &theirs_old);
        assert!(matches!(&actions[0], Action::Rewrite(r) if r.system_flags == SystemFlags::SEEN));
    }

    #[test]
    fn replica_only_messages_come_back() {
        let mine = BTreeMap::new();
        let theirs = BTreeMap::from([
            (3, rec(3, 4, 3, SystemFlags::empty())),
            (4, rec(4, 5, 4, SystemFlags::EXPUNGED)),
        ]);
        let (actions, expunge) = plan(&state(2, 3), 0, &state(4, 5), &mine, &theirs);
        assert_eq!(actions.len(), 1);
        assert!(matches!(
            actions[0],
            Action::CopyBack { same_uid: true, .. }
        ));
        assert!(expunge.is_empty());
    }

    #[test]
    fn records_the_replica_would_refuse_are_renumbered() {
        let mine = BTreeMap::from([(2, rec(2, 3, 2, SystemFlags::empty()))]);
        let theirs = BTreeMap::from([(5, rec(5, 6, 5, SystemFlags::empty()))]);
        let (actions, _) = plan(&state(2, 3), 0, &state(5, 6), &mine, &theirs);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Renumber(r) if r.uid == 2))
        );
    }
}
