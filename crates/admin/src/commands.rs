//! The subcommands. Every change goes through the mailstore API ([`Store`] and its
//! `local` operations), so each is one durable transaction with its sync_log record.
//! Names arrive in the administrator's external form and are converted with the
//! configured namespace; what is printed uses the external form again.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use csync_mailstore::local::{FlagOp, Flags, acl_entries};
use csync_mailstore::names::{validate_partition, validate_userid};
use csync_mailstore::{Mailbox, Namespace, Store, StoreError};

use crate::cli::{Command, Limit, SieveAction};
use crate::conf::{Conf, open_store};
use crate::dump;
use crate::export;
use crate::failure::{Coded, doing, doing_plain, input_error, output_error, status};
use crate::lineends::LfToCrlf;
use crate::show;
use crate::uidset::UidSet;

/// Rights letters Cyrus 3.6 knows (spec §8.8), in its canonical order.
const RIGHTS: &str = "lrswipkxtecdan0123456789";

/// Runs one subcommand; returns the exit status.
pub fn run(conf: &Conf, command: Command, out: &mut dyn Write) -> Result<u8> {
    let ns = &conf.store.namespace;
    let code = match command {
        Command::Users => show::users(&open_store(conf)?, out)?,
        Command::Mailboxes { prefix, no_header } => {
            // An empty prefix lists everything, as no prefix does.
            let prefix = prefix
                .filter(|p| !p.is_empty())
                .map(|p| {
                    prefix_to_internal(ns, &p).with_context(|| doing("cannot list mailboxes", &p))
                })
                .transpose()?;
            show::mailboxes(&open_store(conf)?, prefix.as_deref(), !no_header, out)?
        }
        Command::Show { mailbox } => {
            let name = internal(ns, &mailbox, "cannot show")?;
            show::mailbox(&open_store(conf)?, &name, out)
                .with_context(|| doing("cannot show", &mailbox))?
        }
        Command::Deliver {
            mailbox,
            file,
            flags,
            internaldate,
            lf_to_crlf,
        } => deliver(
            conf,
            &mailbox,
            file.as_deref(),
            flags.as_deref(),
            internaldate,
            lf_to_crlf,
            out,
        )?,
        Command::Create {
            mailbox,
            partition,
            acl,
        } => create(conf, &mailbox, partition.as_deref(), &acl, out)?,
        Command::Rename {
            old,
            new,
            partition,
        } => {
            let what = "cannot rename";
            let from = internal(ns, &old, what)?;
            let to = internal(ns, &new, what)?;
            if let Some(p) = &partition {
                check_partition(conf, p).with_context(|| doing(what, &old))?;
            }
            open_store(conf)?
                .rename_mailbox(&from, &to, partition.as_deref())
                .with_context(|| doing(what, &old))?;
            writeln!(out, "renamed {old} to {new}")?;
            0
        }
        Command::Delete { mailbox } => delete(conf, &mailbox, out)?,
        Command::Flags {
            mailbox,
            uids,
            changes,
        } => flags(conf, &mailbox, &uids, &changes, out)?,
        Command::Expunge { mailbox, uids } => expunge(conf, &mailbox, uids.as_deref(), out)?,
        Command::Acl {
            mailbox,
            identifier,
            rights,
            delete,
        } => acl(
            conf,
            &mailbox,
            identifier.as_deref(),
            rights.as_deref(),
            delete,
            out,
        )?,
        Command::Quota {
            root,
            storage,
            messages,
            remove,
        } => quota(conf, &root, storage, messages, remove, out)?,
        Command::Annotation {
            mailbox,
            entry,
            value,
            user,
            delete,
        } => annotation(
            conf,
            &mailbox,
            &entry,
            value.as_deref(),
            user.as_deref(),
            delete,
            out,
        )?,
        Command::Seen {
            user,
            mailbox,
            uids,
        } => seen(conf, &user, &mailbox, &uids, out)?,
        Command::Subscribe {
            user,
            mailbox,
            remove,
        } => subscribe(conf, &user, mailbox.as_deref(), remove, out)?,
        Command::Sieve { user, action } => sieve(conf, &user, action, out)?,
        Command::Passwd {
            user,
            delete,
            pipe,
            file,
        } => passwd(conf, &user, delete, pipe, file, out)?,
        Command::DeleteUser { user } => {
            let what = "cannot delete user";
            validate_userid(&user).with_context(|| doing(what, &user))?;
            let mut store = open_store(conf)?;
            let count = store
                .user_mailboxes(&user)
                .with_context(|| doing(what, &user))?
                .len();
            store
                .delete_user(&user)
                .with_context(|| doing(what, &user))?;
            writeln!(out, "deleted user {user} ({count} mailbox entries)")?;
            0
        }
        Command::Verify {
            prefix,
            no_hash,
            repair,
        } => {
            let internal_prefix = prefix
                .as_deref()
                .filter(|p| !p.is_empty())
                .map(|p| prefix_to_internal(ns, p).with_context(|| doing("cannot verify", p)))
                .transpose()?;
            show::verify(
                &mut open_store(conf)?,
                internal_prefix.as_deref(),
                !no_hash,
                repair,
                out,
            )?
        }
        Command::Export {
            mailbox,
            mbox,
            maildir,
        } => export(conf, &mailbox, mbox.as_deref(), maildir.as_deref(), out)?,
        Command::Dump {
            users,
            no_bodies,
            no_sieve,
            deleted,
            output,
        } => {
            let opts = dump::Options {
                users: users.into_iter().filter(|u| !u.is_empty()).collect(),
                no_bodies,
                no_sieve,
                deleted,
            };
            for user in &opts.users {
                validate_userid(user).with_context(|| doing("cannot dump", user))?;
            }
            let store = open_store(conf)?;
            match output.as_deref() {
                Some(path) if path != Path::new("-") => {
                    let mut text = Vec::new();
                    dump::write(&store, &opts, &mut text)?;
                    std::fs::write(path, text)
                        .map_err(|e| output_error(path, e))
                        .with_context(|| doing("cannot dump", &path.display().to_string()))?;
                }
                _ => dump::write(&store, &opts, out)?,
            }
            0
        }
    };
    out.flush()?;
    Ok(code)
}

/// An external name in internal form; a bad one fails as `<what> (<name>)`.
fn internal(ns: &Namespace, external: &str, what: &str) -> Result<String> {
    ns.to_internal(external)
        .with_context(|| doing(what, external))
}

/// A prefix for listings: like a name, but it may end with the separator
/// (`user/john/` or `user.john.`) to mean "below this".
fn prefix_to_internal(ns: &Namespace, prefix: &str) -> Result<String, StoreError> {
    let sep = if ns.unixhierarchysep { '/' } else { '.' };
    match prefix.strip_suffix(sep) {
        Some(parent) if !parent.is_empty() => Ok(format!("{}.", ns.to_internal(parent)?)),
        _ => ns.to_internal(prefix),
    }
}

/// A partition the administrator named must be configured (and a plain token).
fn check_partition(conf: &Conf, partition: &str) -> Result<()> {
    validate_partition(partition)?;
    if conf.store.partitions.contains_key(partition) {
        return Ok(());
    }
    let configured: Vec<&str> = conf.store.partitions.keys().map(String::as_str).collect();
    Err(Coded::data(format!("unknown partition {partition:?}"))
        .hint(format!(
            "configured partitions: {}; add partition-{partition} to imapd.conf for a new one",
            configured.join(", ")
        ))
        .into())
}

/// The live messages of `mailbox` in `set`, in uid order.
fn resolve_uids(store: &Store, mailbox: &Mailbox, set: &UidSet) -> Result<Vec<u32>, StoreError> {
    let resolved = set.resolve(mailbox.state.last_uid);
    let mut uids = Vec::new();
    store.for_each_record(mailbox.id, 0, |rec| {
        if !rec.record.is_expunged() && resolved.contains(rec.record.uid) {
            uids.push(rec.record.uid);
        }
        Ok(())
    })?;
    Ok(uids)
}

fn parse_uids(text: &str) -> Result<UidSet, Coded> {
    UidSet::parse(text).map_err(Coded::usage)
}

fn parse_flags<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Flags, Coded> {
    Flags::parse(words).map_err(|e| {
        Coded::usage(e.to_string())
            .hint("system flags are \\Seen \\Answered \\Flagged \\Deleted \\Draft; user flags are atoms like $Label1")
    })
}

fn deliver(
    conf: &Conf,
    mailbox: &str,
    file: Option<&Path>,
    flag_words: Option<&str>,
    internaldate: Option<u64>,
    lf_to_crlf: bool,
    out: &mut dyn Write,
) -> Result<u8> {
    let what = "cannot deliver";
    let name = internal(&conf.store.namespace, mailbox, what)?;
    let flags = parse_flags(flag_words.unwrap_or("").split_whitespace())
        .with_context(|| doing(what, mailbox))?;
    let mut store = open_store(conf)?;
    // Fail on a missing mailbox before reading (possibly endless) standard input.
    store
        .real_mailbox(&name)
        .with_context(|| doing(what, mailbox))?;
    let input: Box<dyn Read> = match file {
        None => Box::new(io::stdin().lock()),
        Some(p) if p == Path::new("-") => Box::new(io::stdin().lock()),
        Some(p) => Box::new(
            File::open(p)
                .map_err(|e| input_error(p, e))
                .with_context(|| doing(what, mailbox))?,
        ),
    };
    let input: Box<dyn Read> = if lf_to_crlf {
        Box::new(LfToCrlf::new(input))
    } else {
        input
    };
    let uid = store
        .deliver(&name, input, &flags, internaldate)
        .with_context(|| doing(what, mailbox))?;
    writeln!(out, "delivered to {mailbox} as uid {uid}")?;
    Ok(0)
}

/// `--acl ID RIGHTS ...` as an ACL string (`ID TAB RIGHTS TAB ...`).
fn acl_string(pairs: &[String]) -> Result<Option<String>, Coded> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut acl = String::new();
    for pair in pairs.chunks(2) {
        let [identifier, rights] = pair else {
            return Err(Coded::usage("--acl takes an IDENTIFIER and its RIGHTS"));
        };
        check_identifier(identifier)?;
        let rights = canonical_rights(rights)?;
        acl.push_str(&format!("{identifier}\t{rights}\t"));
    }
    Ok(Some(acl))
}

fn check_identifier(identifier: &str) -> Result<(), Coded> {
    if identifier.is_empty()
        || identifier == "-"
        || identifier.bytes().any(|b| b.is_ascii_control())
    {
        return Err(Coded::usage(format!("bad ACL identifier {identifier:?}")));
    }
    Ok(())
}

/// Rights letters checked, deduplicated and put in Cyrus's order.
fn canonical_rights(rights: &str) -> Result<String, Coded> {
    if let Some(bad) = rights.chars().find(|c| !RIGHTS.contains(*c)) {
        return Err(Coded::usage(format!(
            "bad right {bad:?} in {rights:?}: rights are letters of {RIGHTS}"
        )));
    }
    Ok(RIGHTS.chars().filter(|c| rights.contains(*c)).collect())
}

fn create(
    conf: &Conf,
    mailbox: &str,
    partition: Option<&str>,
    acl_pairs: &[String],
    out: &mut dyn Write,
) -> Result<u8> {
    let what = "cannot create";
    let name = internal(&conf.store.namespace, mailbox, what)?;
    if let Some(p) = partition {
        check_partition(conf, p).with_context(|| doing(what, mailbox))?;
    }
    let acl = acl_string(acl_pairs).with_context(|| doing(what, mailbox))?;
    let m = open_store(conf)?
        .create_mailbox(&name, partition, acl.as_deref())
        .with_context(|| doing(what, mailbox))?;
    writeln!(
        out,
        "created {mailbox} (uniqueid {}, partition {})",
        m.state.uniqueid, m.state.partition
    )?;
    Ok(0)
}

fn delete(conf: &Conf, mailbox: &str, out: &mut dyn Write) -> Result<u8> {
    let what = "cannot delete";
    let ns = &conf.store.namespace;
    let name = internal(ns, mailbox, what)?;
    let mut store = open_store(conf)?;
    let m = store
        .real_mailbox(&name)
        .with_context(|| doing(what, mailbox))?;
    store
        .delete_mailbox(&name)
        .with_context(|| doing(what, mailbox))?;
    // With delete_mode: delayed the mailbox lives on under a DELETED. name.
    match store
        .mailbox_by_uniqueid(&m.state.uniqueid)
        .with_context(|| doing(what, mailbox))?
    {
        Some(kept) if kept.name() != name => writeln!(
            out,
            "deleted {mailbox} (kept as {} until that is deleted too)",
            ns.to_external(kept.name())
        )?,
        _ => writeln!(out, "deleted {mailbox}")?,
    }
    Ok(0)
}

/// `+FLAG`, `-FLAG`, `=FLAG` arguments folded into the store operations to run.
fn flag_changes(changes: &[String]) -> Result<Vec<(FlagOp, Flags)>, Coded> {
    let (mut set, mut add, mut remove): (Option<Vec<&str>>, Vec<&str>, Vec<&str>) =
        (None, Vec::new(), Vec::new());
    for change in changes {
        let mut chars = change.chars();
        let op = chars.next();
        let words: Vec<&str> = chars.as_str().split_whitespace().collect();
        match op {
            Some('=') => set.get_or_insert_with(Vec::new).extend(words),
            Some('+') | Some('-') if words.is_empty() => {
                return Err(Coded::usage(format!("{change:?} names no flag")));
            }
            Some('+') => add.extend(words),
            Some('-') => remove.extend(words),
            _ => {
                return Err(Coded::usage(format!(
                    "{change:?}: a flag change starts with + (add), - (remove) or = (set)"
                )));
            }
        }
    }
    if let Some(both) = add
        .iter()
        .find(|a| remove.iter().any(|r| r.eq_ignore_ascii_case(a)))
    {
        return Err(Coded::usage(format!("{both} is both added and removed")));
    }
    let mut ops = Vec::new();
    match set {
        // =... gives the final flags: one change, whatever else is listed.
        Some(mut exact) => {
            exact.extend(add);
            exact.retain(|w| !remove.iter().any(|r| r.eq_ignore_ascii_case(w)));
            ops.push((FlagOp::Replace, parse_flags(exact)?));
        }
        None => {
            if !add.is_empty() {
                ops.push((FlagOp::Add, parse_flags(add)?));
            }
            if !remove.is_empty() {
                ops.push((FlagOp::Remove, parse_flags(remove)?));
            }
        }
    }
    Ok(ops)
}

fn describe_flags(flags: &Flags) -> String {
    let mut words: Vec<&str> = csync_protocol::mailbox::SystemFlags::ALL
        .iter()
        .filter(|(f, _)| flags.system.contains(*f))
        .map(|(_, n)| *n)
        .collect();
    words.extend(flags.user.iter().map(String::as_str));
    if words.is_empty() {
        "no flags".to_owned()
    } else {
        words.join(" ")
    }
}

fn flags(
    conf: &Conf,
    mailbox: &str,
    uids: &str,
    changes: &[String],
    out: &mut dyn Write,
) -> Result<u8> {
    let what = "cannot change flags";
    let name = internal(&conf.store.namespace, mailbox, what)?;
    let set = parse_uids(uids).with_context(|| doing(what, mailbox))?;
    let ops = flag_changes(changes).with_context(|| doing(what, mailbox))?;
    let mut store = open_store(conf)?;
    let m = store
        .real_mailbox(&name)
        .with_context(|| doing(what, mailbox))?;
    let targets = resolve_uids(&store, &m, &set).with_context(|| doing(what, mailbox))?;
    if targets.is_empty() {
        writeln!(out, "{mailbox}: no message matches {uids}")?;
        return Ok(0);
    }
    for (op, flags) in ops {
        let changed = store
            .store_flags(&name, &targets, op, &flags)
            .with_context(|| doing(what, mailbox))?;
        let verb = match op {
            FlagOp::Add => "added",
            FlagOp::Remove => "removed",
            FlagOp::Replace => "set",
        };
        writeln!(
            out,
            "{mailbox}: {verb} {} on {changed} of {} messages",
            describe_flags(&flags),
            targets.len()
        )?;
    }
    Ok(0)
}

fn expunge(conf: &Conf, mailbox: &str, uids: Option<&str>, out: &mut dyn Write) -> Result<u8> {
    let what = "cannot expunge";
    let name = internal(&conf.store.namespace, mailbox, what)?;
    let set = uids
        .map(parse_uids)
        .transpose()
        .with_context(|| doing(what, mailbox))?;
    let mut store = open_store(conf)?;
    let n = match set {
        Some(set) => {
            let m = store
                .real_mailbox(&name)
                .with_context(|| doing(what, mailbox))?;
            let targets = resolve_uids(&store, &m, &set).with_context(|| doing(what, mailbox))?;
            if targets.is_empty() {
                0
            } else {
                store
                    .expunge(&name, Some(&targets))
                    .with_context(|| doing(what, mailbox))?
            }
        }
        None => store
            .expunge(&name, None)
            .with_context(|| doing(what, mailbox))?,
    };
    writeln!(out, "{mailbox}: expunged {n} messages")?;
    Ok(0)
}

fn acl(
    conf: &Conf,
    mailbox: &str,
    identifier: Option<&str>,
    rights: Option<&str>,
    delete: bool,
    out: &mut dyn Write,
) -> Result<u8> {
    let what = "cannot change the ACL";
    let name = internal(&conf.store.namespace, mailbox, what)?;
    let mut store = open_store(conf)?;
    let m = store
        .real_mailbox(&name)
        .with_context(|| doing(what, mailbox))?;
    let entries = acl_entries(&m.state.acl);
    let Some(identifier) = identifier else {
        for (id, r) in &entries {
            writeln!(out, "{id}\t{r}")?;
        }
        return Ok(0);
    };
    check_identifier(identifier).with_context(|| doing(what, mailbox))?;
    let current = entries
        .iter()
        .find(|(id, _)| id == identifier)
        .map(|(_, r)| r.as_str());
    let new_rights = match (rights, delete) {
        (None, false) => {
            return match current {
                Some(r) => {
                    writeln!(out, "{identifier}\t{r}")?;
                    Ok(0)
                }
                None => Err(Coded::no_input(format!("{identifier} is not in the ACL"))
                    .hint("`csyncadm acl MAILBOX` lists the ACL"))
                .with_context(|| doing("cannot show the ACL", mailbox)),
            };
        }
        (_, true) => None,
        (Some(r), false) => {
            let have = current.unwrap_or("");
            let wanted = if let Some(more) = r.strip_prefix('+') {
                format!("{have}{more}")
            } else if let Some(less) = r.strip_prefix('-') {
                canonical_rights(less).with_context(|| doing(what, mailbox))?;
                have.chars().filter(|c| !less.contains(*c)).collect()
            } else if r.is_empty() {
                return Err(Coded::usage("empty rights").hint("remove an entry with --delete"))
                    .with_context(|| doing(what, mailbox));
            } else {
                r.to_owned()
            };
            let wanted = canonical_rights(&wanted).with_context(|| doing(what, mailbox))?;
            // Taking away the last right removes the entry, as in Cyrus.
            (!wanted.is_empty()).then_some(wanted)
        }
    };
    if new_rights.is_none() && current.is_none() {
        writeln!(out, "{mailbox}: {identifier} was not in the ACL")?;
        return Ok(0);
    }
    store
        .set_acl(&name, identifier, new_rights.as_deref())
        .with_context(|| doing(what, mailbox))?;
    match new_rights {
        Some(r) => writeln!(out, "{mailbox}: {identifier} now has {r}")?,
        None => writeln!(out, "{mailbox}: removed {identifier} from the ACL")?,
    }
    Ok(0)
}

fn quota(
    conf: &Conf,
    root: &str,
    storage: Option<Limit>,
    messages: Option<Limit>,
    remove: bool,
    out: &mut dyn Write,
) -> Result<u8> {
    let what = "cannot change quota";
    let name = internal(&conf.store.namespace, root, what)?;
    let mut store = open_store(conf)?;
    let current = store.quota(&name).with_context(|| doing(what, root))?;
    if remove {
        if current.is_none() {
            return Err(Coded::no_input(format!("{root} is not a quota root")))
                .with_context(|| doing("cannot remove quota", root));
        }
        store
            .remove_quota(&name)
            .with_context(|| doing("cannot remove quota", root))?;
        writeln!(out, "removed quota root {root}")?;
        return Ok(0);
    }
    if storage.is_some() || messages.is_some() {
        // A limit not given on the command line stays as it was.
        let pick = |given: Option<Limit>, now: Option<u32>| match given {
            Some(Limit::Max(n)) => Some(n),
            Some(Limit::Unlimited) => None,
            None => now,
        };
        let storage = pick(storage, current.as_ref().and_then(|q| q.storage));
        let messages = pick(messages, current.as_ref().and_then(|q| q.message));
        store
            .set_quota(&name, storage, messages)
            .with_context(|| doing(what, root))?;
    }
    show::quota(&store, &name, root, out)
}

/// `/shared/x`, `/private/x` or `/x` with `--user` → (entry without the scope,
/// userid or "" for the shared value).
fn annotation_entry<'a>(
    entry: &'a str,
    user: Option<&'a str>,
) -> Result<(&'a str, &'a str), Coded> {
    let (bare, private) = if let Some(rest) = entry.strip_prefix("/shared/") {
        (&entry[entry.len() - rest.len() - 1..], Some(false))
    } else if let Some(rest) = entry.strip_prefix("/private/") {
        (&entry[entry.len() - rest.len() - 1..], Some(true))
    } else {
        (entry, None)
    };
    if !bare.starts_with('/') || bare.len() < 2 {
        return Err(Coded::usage(format!(
            "bad annotation entry {entry:?}: entries look like /comment"
        )));
    }
    match (private, user) {
        (Some(false), Some(_)) => Err(Coded::usage("a /shared/ entry has no --user")),
        (Some(true), None) => Err(Coded::usage("a /private/ entry needs --user")),
        (_, Some(u)) => Ok((bare, u)),
        (_, None) => Ok((bare, "")),
    }
}

fn annotation(
    conf: &Conf,
    mailbox: &str,
    entry: &str,
    value: Option<&str>,
    user: Option<&str>,
    delete: bool,
    out: &mut dyn Write,
) -> Result<u8> {
    let subject = if mailbox.is_empty() {
        "server"
    } else {
        mailbox
    };
    let what = "cannot set annotation";
    let (bare, userid) = annotation_entry(entry, user).with_context(|| doing(what, subject))?;
    if !userid.is_empty() {
        validate_userid(userid).with_context(|| doing(what, subject))?;
    }
    let name = if mailbox.is_empty() {
        String::new()
    } else {
        internal(&conf.store.namespace, mailbox, what)?
    };
    let mut store = open_store(conf)?;
    let scope = if userid.is_empty() {
        "shared".to_owned()
    } else {
        format!("private to {userid}")
    };
    if delete || value.is_some() {
        store
            .set_annotation(&name, bare, userid, value.map(str::as_bytes))
            .with_context(|| doing(what, subject))?;
        match value {
            Some(v) if !v.is_empty() => writeln!(out, "{subject}: set {bare} ({scope})")?,
            _ => writeln!(out, "{subject}: deleted {bare} ({scope})")?,
        }
        return Ok(0);
    }
    let what = "cannot show annotation";
    let annotations = if name.is_empty() {
        store.mailbox_annotations(0)
    } else {
        store
            .mailbox(&name)
            .and_then(|m| m.ok_or_else(|| StoreError::NoSuchMailbox(name.clone())))
            .map(|m| m.state.annotations)
    }
    .with_context(|| doing(what, subject))?;
    match annotations
        .iter()
        .find(|a| a.entry == bare && a.userid == userid)
    {
        Some(a) => {
            out.write_all(&a.value)?;
            writeln!(out)?;
            Ok(0)
        }
        None => Err(Coded::no_input(format!("no {bare} annotation ({scope})")))
            .with_context(|| doing(what, subject)),
    }
}

fn seen(conf: &Conf, user: &str, mailbox: &str, uids: &str, out: &mut dyn Write) -> Result<u8> {
    let what = "cannot set seen state";
    validate_userid(user).with_context(|| doing(what, user))?;
    let name = internal(&conf.store.namespace, mailbox, what)?;
    let set = parse_uids(uids).with_context(|| doing(what, mailbox))?;
    let mut store = open_store(conf)?;
    let m = store
        .real_mailbox(&name)
        .with_context(|| doing(what, mailbox))?;
    let targets = resolve_uids(&store, &m, &set).with_context(|| doing(what, mailbox))?;
    store
        .set_seen(user, &name, &targets)
        .with_context(|| doing(what, mailbox))?;
    writeln!(
        out,
        "{mailbox}: {} messages marked seen for {user}",
        targets.len()
    )?;
    Ok(0)
}

fn subscribe(
    conf: &Conf,
    user: &str,
    mailbox: Option<&str>,
    remove: bool,
    out: &mut dyn Write,
) -> Result<u8> {
    let ns = &conf.store.namespace;
    validate_userid(user).with_context(|| doing("cannot subscribe", user))?;
    let mut store = open_store(conf)?;
    let Some(mailbox) = mailbox else {
        let names = store
            .subscriptions(user)
            .with_context(|| doing("cannot list subscriptions", user))?;
        for name in names {
            writeln!(out, "{}", ns.to_external(&name))?;
        }
        return Ok(0);
    };
    let what = if remove {
        "cannot unsubscribe"
    } else {
        "cannot subscribe"
    };
    let name = internal(ns, mailbox, what)?;
    store
        .subscribe(user, &name, !remove)
        .with_context(|| doing(what, mailbox))?;
    if remove {
        writeln!(out, "{user} unsubscribed from {mailbox}")?;
    } else {
        writeln!(out, "{user} subscribed to {mailbox}")?;
    }
    Ok(0)
}

/// Cyrus's default `sieve_maxscriptsize`, in KiB.
const SIEVE_MAX_KIB: i64 = 32;

fn sieve(conf: &Conf, user: &str, action: SieveAction, out: &mut dyn Write) -> Result<u8> {
    validate_userid(user).with_context(|| doing("cannot manage sieve scripts", user))?;
    let mut store = open_store(conf)?;
    let exists = |store: &Store, name: &str, what: &str| -> Result<()> {
        match store
            .sieve_script(user, name)
            .with_context(|| doing(what, user))?
        {
            Some(_) => Ok(()),
            None => Err(Coded::no_input(format!("no sieve script {name:?}"))
                .hint(format!("`csyncadm sieve {user} list` lists the scripts")))
            .with_context(|| doing(what, user)),
        }
    };
    match action {
        SieveAction::Put {
            name,
            file,
            activate,
        } => {
            let what = "cannot store sieve script";
            let max_kib = conf
                .imapd
                .int("sieve_maxscriptsize")
                .with_context(|| doing(what, user))?
                .unwrap_or(SIEVE_MAX_KIB);
            let max = u64::try_from(max_kib).unwrap_or(0).saturating_mul(1024);
            let reader: Box<dyn Read> = if file == Path::new("-") {
                Box::new(io::stdin().lock())
            } else {
                Box::new(
                    File::open(&file)
                        .map_err(|e| input_error(&file, e))
                        .with_context(|| doing(what, user))?,
                )
            };
            // Scripts are kept whole in the index; read no more than is allowed.
            let mut content = Vec::new();
            reader
                .take(max.saturating_add(1))
                .read_to_end(&mut content)
                .map_err(|e| input_error(&file, e))
                .with_context(|| doing(what, user))?;
            if content.len() as u64 > max {
                return Err(Coded::data(format!(
                    "{} is larger than sieve_maxscriptsize ({max_kib} KiB)",
                    file.display()
                )))
                .with_context(|| doing(what, user));
            }
            store
                .put_sieve(user, &name, &content, activate)
                .with_context(|| doing(what, user))?;
            let active = if activate { " and activated" } else { "" };
            writeln!(out, "stored sieve script {name}{active} for {user}")?;
        }
        SieveAction::Activate { name } => {
            let what = "cannot activate sieve script";
            exists(&store, &name, what)?;
            store
                .activate_sieve(user, Some(&name))
                .with_context(|| doing(what, user))?;
            writeln!(out, "activated sieve script {name} for {user}")?;
        }
        SieveAction::Deactivate => {
            store
                .activate_sieve(user, None)
                .with_context(|| doing("cannot deactivate sieve scripts", user))?;
            writeln!(out, "no sieve script is active for {user}")?;
        }
        SieveAction::Delete { name } => {
            let what = "cannot delete sieve script";
            exists(&store, &name, what)?;
            store
                .delete_sieve(user, &name)
                .with_context(|| doing(what, user))?;
            writeln!(out, "deleted sieve script {name} of {user}")?;
        }
        SieveAction::List => show::sieve_list(&store, user, out)?,
        SieveAction::Show { name } => {
            let what = "cannot show sieve script";
            exists(&store, &name, what)?;
            if let Some((content, _, _)) = store
                .sieve_script(user, &name)
                .with_context(|| doing(what, user))?
            {
                out.write_all(&content)?;
            }
        }
    }
    Ok(0)
}

fn export(
    conf: &Conf,
    mailbox: &str,
    mbox: Option<&Path>,
    maildir: Option<&Path>,
    out: &mut dyn Write,
) -> Result<u8> {
    let what = "cannot export";
    let name = internal(&conf.store.namespace, mailbox, what)?;
    let store = open_store(conf)?;
    let m = store
        .real_mailbox(&name)
        .with_context(|| doing(what, mailbox))?;
    let to_anyhow = |e: export::ExportError| -> anyhow::Error {
        match e {
            export::ExportError::Store(e) => e.into(),
            export::ExportError::Output(path, e) => output_error(&path, e).into(),
        }
    };
    let (exported, target, summary_to_stderr) = match (mbox, maildir) {
        (Some(path), _) if path == Path::new("-") => {
            let stdout_name = Path::new("standard output");
            let exported = export::mbox(&store, &m, out, stdout_name)
                .map_err(to_anyhow)
                .with_context(|| doing(what, mailbox))?;
            (exported, "standard output".to_owned(), true)
        }
        (Some(path), _) => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| output_error(path, e))
                .with_context(|| doing(what, mailbox))?;
            let mut writer = io::BufWriter::new(file);
            let result = export::mbox(&store, &m, &mut writer, path);
            let result = result.and_then(|e| {
                writer
                    .into_inner()
                    .map_err(io::IntoInnerError::into_error)
                    .and_then(|f| f.sync_all())
                    .map_err(|err| export::ExportError::Output(path.to_path_buf(), err))
                    .map(|()| e)
            });
            match result {
                Ok(e) => (e, path.display().to_string(), false),
                Err(e) => {
                    // Half an mbox is worse than none.
                    let _ = std::fs::remove_file(path);
                    return Err(to_anyhow(e)).with_context(|| doing(what, mailbox));
                }
            }
        }
        (None, Some(dir)) => {
            let exported = export::maildir(&store, &m, dir)
                .map_err(to_anyhow)
                .with_context(|| doing(what, mailbox))?;
            (exported, dir.display().to_string(), false)
        }
        (None, None) => {
            return Err(Coded::usage("give --mbox FILE or --maildir DIR"))
                .with_context(|| doing_plain(what));
        }
    };
    for (uid, why) in &exported.unreadable {
        warn(&format!("{mailbox} uid {uid} was not exported: {why}"));
    }
    let summary = format!(
        "exported {} messages from {mailbox} to {target}",
        exported.messages
    );
    if summary_to_stderr {
        warn(&summary);
    } else {
        writeln!(out, "{summary}")?;
    }
    if exported.unreadable.is_empty() {
        Ok(0)
    } else {
        warn("hint: `csyncadm verify` reports damaged or missing message files");
        Ok(status::DATAERR)
    }
}

/// A line on standard error; a closed stderr is no reason to fail.
pub fn warn(message: &str) {
    let _ = writeln!(io::stderr(), "csyncadm: {message}");
}

/// `passwd`: the replication logins that `sync_server` accepts (SCRAM verifiers, so
/// PLAIN, LOGIN and SCRAM-SHA-1/256 all work without the password being stored).
fn passwd(
    conf: &Conf,
    user: &str,
    delete: bool,
    pipe: bool,
    file: Option<std::path::PathBuf>,
    out: &mut dyn Write,
) -> Result<u8> {
    use csync_auth::passwd::PasswordFile;
    let path = file.unwrap_or_else(|| {
        conf.imapd
            .string("csync_password_file")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| conf.store.configdirectory.join("csync.passwd"))
    });
    let shown = path.display().to_string();
    let mut passwords = PasswordFile::load_or_new(&path)
        .with_context(|| doing("cannot read the password file", &shown))?;
    if delete {
        if !passwords.remove(user) {
            return Err(Coded::new(status::NOUSER, format!("{user} is not in {shown}")).into());
        }
    } else {
        let password =
            read_password(pipe).with_context(|| doing_plain("cannot read the password"))?;
        passwords
            .set(user, &password)
            .with_context(|| doing("cannot set the password", user))?;
    }
    // A new replica may not have its configdirectory yet.
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| doing("cannot create the directory of", &shown))?;
    }
    passwords
        .save()
        .with_context(|| doing("cannot write the password file", &shown))?;
    writeln!(
        out,
        "{} {user} in {shown}",
        if delete {
            "deleted"
        } else {
            "set password for"
        }
    )?;
    Ok(0)
}

/// The password from standard input: one line (a terminal gets a prompt; the
/// password is visible as typed, so prefer `-p` with a pipe for scripts).
fn read_password(pipe: bool) -> io::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = io::stdin();
    if !pipe && stdin.is_terminal() {
        eprint!("Password: ");
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty password",
        ));
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_changes_fold_into_store_operations() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ops = flag_changes(&args(&["+\\Seen", "+$Label1"])).unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].0, FlagOp::Add);
        assert_eq!(describe_flags(&ops[0].1), "\\Seen $Label1");
        let ops = flag_changes(&args(&["+\\Seen", "-\\Flagged $x"])).unwrap();
        assert_eq!(
            ops.iter().map(|(op, _)| *op).collect::<Vec<_>>(),
            [FlagOp::Add, FlagOp::Remove]
        );
        let ops = flag_changes(&args(&["=\\Seen", "+$a", "-\\seen"])).unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(describe_flags(&ops[0].1), "$a");
        let ops = flag_changes(&args(&["="])).unwrap();
        assert_eq!(describe_flags(&ops[0].1), "no flags");
        for bad in [
            &["\\Seen"][..],
            &["+"],
            &["+\\Seen", "-\\SEEN"],
            &["+\\Recent"],
            &["+\\Expunged"],
            &["+(x"],
        ] {
            assert!(flag_changes(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rights_are_checked_and_ordered() {
        assert_eq!(canonical_rights("srl").unwrap(), "lrs");
        assert_eq!(canonical_rights("lrsl").unwrap(), "lrs");
        assert_eq!(canonical_rights("").unwrap(), "");
        assert!(canonical_rights("lrz").is_err());
        assert_eq!(
            acl_string(&["john".into(), "rl".into(), "-bob".into(), "w".into()]).unwrap(),
            Some("john\tlr\t-bob\tw\t".into())
        );
        assert!(acl_string(&["jo\thn".into(), "l".into()]).is_err());
    }

    #[test]
    fn annotation_entries() {
        assert_eq!(
            annotation_entry("/comment", None).unwrap(),
            ("/comment", "")
        );
        assert_eq!(
            annotation_entry("/shared/comment", None).unwrap(),
            ("/comment", "")
        );
        assert_eq!(
            annotation_entry("/private/comment", Some("john")).unwrap(),
            ("/comment", "john")
        );
        assert_eq!(
            annotation_entry("/comment", Some("john")).unwrap(),
            ("/comment", "john")
        );
        assert!(annotation_entry("/private/comment", None).is_err());
        assert!(annotation_entry("/shared/comment", Some("john")).is_err());
        assert!(annotation_entry("comment", None).is_err());
        assert!(annotation_entry("/", None).is_err());
        assert!(annotation_entry("/shared/", None).is_err());
    }

    #[test]
    fn prefixes() {
        let netnews = Namespace::default();
        assert_eq!(prefix_to_internal(&netnews, "user.").unwrap(), "user.");
        assert_eq!(prefix_to_internal(&netnews, "user.jo").unwrap(), "user.jo");
        let unix = Namespace {
            unixhierarchysep: true,
            ..Namespace::default()
        };
        assert_eq!(
            prefix_to_internal(&unix, "user/john.doe/").unwrap(),
            "user.john^doe."
        );
        assert!(prefix_to_internal(&netnews, "user/x").is_err());
    }
}
