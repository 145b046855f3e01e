//! What csyncadm prints about the store: listings, one mailbox in full (Cyrus's
//! `mbexamine`), quotas, sieve scripts and `verify` reports. Everything streams
//! from the index, so a large mailbox or store is never held in memory.

use std::io::{self, Write};

use anyhow::{Context, Result};
use csync_mailstore::local::acl_entries;
use csync_mailstore::verify::{Problem, Report};
use csync_mailstore::{Namespace, Store, StoreError};
use csync_protocol::mailbox::SystemFlags;

use crate::failure::{Coded, doing, doing_plain, status};
use crate::timefmt;

/// A failed write to standard output, in the store's error type so it can leave a
/// record-streaming callback.
fn stdout_error(e: io::Error) -> StoreError {
    StoreError::Io {
        path: "standard output".into(),
        source: e,
    }
}

/// Bytes for a terminal: printable ASCII as is, the rest escaped, in quotes.
pub fn quote_bytes(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\t' => s.push_str("\\t"),
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

fn mailbox_type(mboxtype: Option<&str>) -> &str {
    mboxtype.filter(|t| !t.is_empty()).unwrap_or("e")
}

pub fn users(store: &Store, out: &mut dyn Write) -> Result<u8> {
    let users = store
        .users()
        .with_context(|| doing_plain("cannot list users"))?;
    for user in users {
        writeln!(out, "{user}")?;
    }
    Ok(0)
}

pub fn mailboxes(
    store: &Store,
    prefix: Option<&str>,
    header: bool,
    out: &mut dyn Write,
) -> Result<u8> {
    let ns = store.namespace();
    if header {
        writeln!(
            out,
            "name\ttype\tuidvalidity\tlast_uid\thighestmodseq\tmessages\tpartition"
        )?;
    }
    store
        .for_each_mailbox(prefix, |m| {
            if prefix.is_some_and(|p| !m.name().starts_with(p)) {
                return Ok(());
            }
            let s = &m.state;
            // Tombstones and intermediates hold no messages and live on no partition.
            let (messages, partition) = if m.is_real() {
                (store.message_count(m.id)?.to_string(), s.partition.as_str())
            } else {
                ("-".to_owned(), "-")
            };
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{messages}\t{partition}",
                ns.to_external(m.name()),
                mailbox_type(s.mboxtype.as_deref()),
                s.uidvalidity,
                s.last_uid,
                s.highestmodseq
            )
            .map_err(stdout_error)
        })
        .with_context(|| doing_plain("cannot list mailboxes"))?;
    Ok(0)
}

fn flag_list(flags: SystemFlags, user: &[String]) -> String {
    let mut words: Vec<&str> = SystemFlags::ALL
        .iter()
        .filter(|(f, _)| flags.contains(*f))
        .map(|(_, n)| *n)
        .collect();
    words.extend(user.iter().map(String::as_str));
    format!("({})", words.join(" "))
}

fn scope(userid: &str) -> String {
    if userid.is_empty() {
        "shared".to_owned()
    } else {
        format!("private:{userid}")
    }
}

/// Everything about one mailbox: the header, then one line per record.
pub fn mailbox(store: &Store, name: &str, out: &mut dyn Write) -> Result<u8> {
    let ns = store.namespace();
    let m = store
        .mailbox(name)?
        .ok_or_else(|| StoreError::NoSuchMailbox(name.to_owned()))?;
    let s = &m.state;
    let kind = if m.is_tombstone() {
        " (deleted: tombstone)"
    } else if m.is_intermediate() {
        " (intermediate)"
    } else {
        ""
    };
    writeln!(out, "mailbox:         {}", ns.to_external(name))?;
    writeln!(out, "internal name:   {name}")?;
    writeln!(out, "uniqueid:        {}", s.uniqueid)?;
    writeln!(
        out,
        "type:            {}{kind}",
        mailbox_type(s.mboxtype.as_deref())
    )?;
    writeln!(
        out,
        "owner:           {}",
        m.owner.as_deref().unwrap_or("-")
    )?;
    if m.is_real() {
        writeln!(out, "partition:       {}", s.partition)?;
        writeln!(out, "directory:       {}", store.mailbox_dir(&m)?.display())?;
    }
    writeln!(out, "uidvalidity:     {}", s.uidvalidity)?;
    writeln!(out, "last_uid:        {}", s.last_uid)?;
    writeln!(out, "highestmodseq:   {}", s.highestmodseq)?;
    writeln!(out, "createdmodseq:   {}", s.createdmodseq)?;
    writeln!(out, "foldermodseq:    {}", s.foldermodseq)?;
    writeln!(out, "deletedmodseq:   {}", m.deletedmodseq)?;
    writeln!(out, "xconvmodseq:     {}", s.xconvmodseq)?;
    writeln!(out, "raclmodseq:      {}", s.raclmodseq)?;
    writeln!(out, "recentuid:       {}", s.recentuid)?;
    writeln!(out, "recenttime:      {}", timefmt::both(s.recenttime))?;
    writeln!(out, "last_appenddate: {}", timefmt::both(s.last_appenddate))?;
    writeln!(out, "pop3_last_login: {}", timefmt::both(s.pop3_last_login))?;
    writeln!(out, "pop3_show_after: {}", timefmt::both(s.pop3_show_after))?;
    writeln!(
        out,
        "options:         {}",
        if s.options.is_empty() {
            "-"
        } else {
            &s.options
        }
    )?;
    writeln!(
        out,
        "quotaroot:       {}",
        s.quotaroot
            .as_deref()
            .map_or_else(|| "-".to_owned(), |q| ns.to_external(q))
    )?;
    writeln!(out, "sync_crc:        {}", s.sync_crc)?;
    writeln!(
        out,
        "sync_crc_annot:  {}",
        s.sync_crc_annot
            .map_or_else(|| "-".to_owned(), |c| c.to_string())
    )?;
    writeln!(out, "acl:")?;
    for (identifier, rights) in acl_entries(&s.acl) {
        writeln!(out, "  {identifier}\t{rights}")?;
    }
    writeln!(out, "annotations:")?;
    for a in &s.annotations {
        writeln!(
            out,
            "  {}\t{}\tmodseq {}\t{}",
            a.entry,
            scope(&a.userid),
            a.modseq,
            quote_bytes(&a.value)
        )?;
    }
    if !m.is_real() {
        return Ok(0);
    }
    writeln!(out, "records:")?;
    writeln!(out, "  uid\tflags\tmodseq\tguid\tsize\tinternaldate")?;
    let (mut total, mut expunged) = (0u64, 0u64);
    store.for_each_record(m.id, 0, |rec| {
        let r = &rec.record;
        total += 1;
        if r.is_expunged() {
            expunged += 1;
        }
        // An expunged record whose file is gone (expunge_mode: immediate).
        let file = if rec.has_file { "" } else { "\t[no file]" };
        writeln!(
            out,
            "  {}\t{}\t{}\t{}\t{}\t{}{file}",
            r.uid,
            flag_list(r.system_flags, &r.user_flags),
            r.modseq,
            r.guid.to_hex(),
            r.size,
            timefmt::both(r.internaldate)
        )
        .map_err(stdout_error)?;
        for a in &r.annotations {
            writeln!(
                out,
                "    annotation {}\t{}\tmodseq {}\t{}",
                a.entry,
                scope(&a.userid),
                a.modseq,
                quote_bytes(&a.value)
            )
            .map_err(stdout_error)?;
        }
        Ok(())
    })?;
    writeln!(out, "{total} records, {expunged} expunged")?;
    Ok(0)
}

/// A quota root's limits and what is used under it.
pub fn quota(store: &Store, root: &str, shown: &str, out: &mut dyn Write) -> Result<u8> {
    let what = "cannot show quota";
    let Some(q) = store.quota(root).with_context(|| doing(what, shown))? else {
        return Err(
            Coded::no_input(format!("{shown} is not a quota root")).hint(format!(
                "make it one with `csyncadm quota {shown} --storage KIB`"
            )),
        )
        .with_context(|| doing(what, shown));
    };
    let (kib, messages, folders) = store
        .quota_usage(root)
        .with_context(|| doing(what, shown))?;
    let limit = |l: Option<u32>, unit: &str| match l {
        Some(n) => format!("of {n}{unit}"),
        None => "(no limit)".to_owned(),
    };
    writeln!(out, "quota root: {shown}")?;
    writeln!(out, "storage:    {kib} KiB {}", limit(q.storage, " KiB"))?;
    writeln!(out, "messages:   {messages} {}", limit(q.message, ""))?;
    writeln!(out, "folders:    {folders}")?;
    Ok(0)
}

/// A user's scripts: name, whether active, last update.
pub fn sieve_list(store: &Store, user: &str, out: &mut dyn Write) -> Result<()> {
    let entries = store
        .sieve_entries(user)
        .with_context(|| doing("cannot list sieve scripts", user))?;
    // The legacy listing marks the active script with a `<name>.bc` entry.
    let active: Option<&str> = entries
        .iter()
        .filter(|e| e.is_active == Some(true))
        .find_map(|e| e.filename.strip_suffix(".bc"));
    for e in &entries {
        if let Some(name) = e.filename.strip_suffix(".script") {
            let flag = if Some(name) == active { "active" } else { "-" };
            writeln!(
                out,
                "{name}\t{flag}\t{}",
                timefmt::rfc3339(e.last_update).unwrap_or_else(|| e.last_update.to_string())
            )?;
        }
    }
    Ok(())
}

/// A problem, with the mailbox in the administrator's form.
fn describe(problem: &Problem, ns: &Namespace) -> String {
    match problem {
        Problem::MissingFile { mailbox, uid, path } => format!(
            "{} uid {uid}: message file {} is missing",
            ns.to_external(mailbox),
            path.display()
        ),
        Problem::BadFile {
            mailbox,
            uid,
            expected,
            found,
        } => format!(
            "{} uid {uid}: message file is {found}, the index says {expected}",
            ns.to_external(mailbox)
        ),
        Problem::Crc {
            mailbox,
            stored,
            computed,
        } => format!(
            "{}: stored SYNC_CRC/SYNC_CRC_ANNOT {}/{} but the records give {}/{}",
            ns.to_external(mailbox),
            stored.0,
            stored.1,
            computed.0,
            computed.1
        ),
        Problem::Counters { mailbox, detail } => {
            format!("{}: {detail}", ns.to_external(mailbox))
        }
    }
}

fn print_report(report: &Report, ns: &Namespace, out: &mut dyn Write) -> io::Result<()> {
    for p in &report.problems {
        writeln!(out, "problem: {}", describe(p, ns))?;
    }
    for path in &report.leftovers {
        writeln!(out, "leftover: {}", path.display())?;
    }
    writeln!(
        out,
        "{} mailboxes, {} records, {} bytes hashed: {} problems, {} leftovers",
        report.mailboxes,
        report.records,
        report.bytes_hashed,
        report.problems.len(),
        report.leftovers.len()
    )
}

/// `verify [--repair]`: exit 0 when clean (after repair, when what remains is
/// clean), 1 when problems are found. Leftovers alone are harmless.
pub fn verify(
    store: &mut Store,
    prefix: Option<&str>,
    hash: bool,
    repair: bool,
    out: &mut dyn Write,
) -> Result<u8> {
    let what = "cannot verify";
    let shown = prefix.map(|p| store.namespace().to_external(p));
    let context = || match &shown {
        Some(p) => doing(what, p),
        None => doing_plain(what),
    };
    let ns = store.namespace().clone();
    let report = store.verify(prefix, hash).with_context(context)?;
    print_report(&report, &ns, out)?;
    let remaining = if repair && (!report.problems.is_empty() || !report.leftovers.is_empty()) {
        let fixed = store
            .repair(&report)
            .with_context(|| doing_plain("cannot repair"))?;
        writeln!(out, "repair: {fixed} fixed; verifying again")?;
        let after = store.verify(prefix, hash).with_context(context)?;
        print_report(&after, &ns, out)?;
        after
    } else {
        report
    };
    if remaining
        .problems
        .iter()
        .any(|p| matches!(p, Problem::MissingFile { .. } | Problem::BadFile { .. }))
    {
        writeln!(
            out,
            "note: a missing or damaged message file cannot be rebuilt here; it must come \
             back from a replica or a backup"
        )?;
    }
    if remaining.is_clean() {
        Ok(0)
    } else {
        Ok(status::PROBLEMS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_quoted_for_terminals() {
        assert_eq!(quote_bytes(b"hello"), "\"hello\"");
        assert_eq!(
            quote_bytes(b"a\"b\\c\td\r\n\x00\xff"),
            "\"a\\\"b\\\\c\\td\\r\\n\\x00\\xff\""
        );
    }

    #[test]
    fn flags_print_like_imap() {
        assert_eq!(
            flag_list(
                SystemFlags::SEEN | SystemFlags::DELETED,
                &["$Label1".to_owned()]
            ),
            "(\\Deleted \\Seen $Label1)"
        );
        assert_eq!(flag_list(SystemFlags::empty(), &[]), "()");
    }
}
