//! `export`: a mailbox's messages as an mboxrd file or a Maildir, one message at a
//! time straight from its `<uid>.` file, so memory does not grow with message or
//! mailbox size. Expunged records are skipped. Both formats get LF line ends, as
//! mbox and Maildir readers expect (the store keeps CRLF, spec §8.4).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use csync_mailstore::{Mailbox, MessageRecord, Store, StoreError};
use csync_protocol::mailbox::SystemFlags;

use crate::lineends::ToUnix;
use crate::timefmt::asctime;

/// What an export did.
#[derive(Debug, Default)]
pub struct Exported {
    pub messages: u64,
    /// Records whose message file could not be read: (uid, why).
    pub unreadable: Vec<(u32, String)>,
}

/// Why an export stopped.
#[derive(Debug)]
pub enum ExportError {
    Store(StoreError),
    /// Writing the output failed.
    Output(PathBuf, io::Error),
}

impl From<StoreError> for ExportError {
    fn from(e: StoreError) -> Self {
        ExportError::Store(e)
    }
}

/// The message files of a mailbox's live records, in uid order, each opened in turn.
fn for_each_message(
    store: &Store,
    mailbox: &Mailbox,
    unopened: &mut Vec<(u32, String)>,
    mut f: impl FnMut(&MessageRecord, File) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let mut failure = None;
    store.for_each_record(mailbox.id, 0, |rec| {
        if rec.record.is_expunged() || failure.is_some() {
            return Ok(());
        }
        let path = store.message_path(mailbox, rec.record.uid)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                // A damaged mailbox should still give up everything it can.
                unopened.push((rec.record.uid, format!("{}: {e}", path.display())));
                return Ok(());
            }
        };
        if let Err(e) = f(&rec, file) {
            failure = Some(e);
        }
        Ok(())
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Copies `file` through `conv`; a read error is the message's fault, a write error
/// the output's.
fn copy_converted<W: Write>(
    mut file: File,
    conv: &mut ToUnix<W>,
    out_path: &Path,
) -> Result<Option<io::Error>, ExportError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok(Some(e)),
        };
        conv.push(&buf[..n])
            .map_err(|e| ExportError::Output(out_path.to_path_buf(), e))?;
    }
}

/// Writes the mailbox as mboxrd to `out` (`out_path` names it in errors).
pub fn mbox(
    store: &Store,
    mailbox: &Mailbox,
    out: &mut dyn Write,
    out_path: &Path,
) -> Result<Exported, ExportError> {
    let mut exported = Exported::default();
    let mut unopened = Vec::new();
    let output = |e| ExportError::Output(out_path.to_path_buf(), e);
    for_each_message(store, mailbox, &mut unopened, |rec, file| {
        // The envelope sender is not kept in the store; MAILER-DAEMON is the
        // customary stand-in.
        writeln!(
            out,
            "From MAILER-DAEMON {}",
            asctime(rec.record.internaldate)
        )
        .map_err(output)?;
        let mut conv = ToUnix::new(&mut *out, true);
        let read_error = copy_converted(file, &mut conv, out_path)?;
        conv.finish(true).map_err(output)?;
        match read_error {
            // The message is cut short in the mbox: say so rather than pretend.
            Some(e) => exported.unreadable.push((rec.record.uid, e.to_string())),
            None => exported.messages += 1,
        }
        Ok(())
    })?;
    out.flush().map_err(output)?;
    exported.unreadable.extend(unopened);
    exported.unreadable.sort_unstable();
    Ok(exported)
}

/// Maildir info flags, in the ASCII order the Maildir convention requires.
fn maildir_flags(flags: SystemFlags) -> String {
    [
        (SystemFlags::DRAFT, 'D'),
        (SystemFlags::FLAGGED, 'F'),
        (SystemFlags::ANSWERED, 'R'),
        (SystemFlags::SEEN, 'S'),
        (SystemFlags::DELETED, 'T'),
    ]
    .iter()
    .filter(|(f, _)| flags.contains(*f))
    .map(|(_, c)| *c)
    .collect()
}

/// The file name of a record in `cur/`: `<internaldate>.<uid>.csync:2,<flags>`.
pub fn maildir_name(rec: &MessageRecord) -> String {
    format!(
        "{}.{}.csync:2,{}",
        rec.record.internaldate,
        rec.record.uid,
        maildir_flags(rec.record.system_flags)
    )
}

/// Writes the mailbox into the Maildir `dir` (created with `cur`, `new` and `tmp` if
/// needed). Each message is written in `tmp/` and renamed into `cur/`, as Maildir
/// writers do, with the internaldate as its modification time (Maildir readers take
/// the arrival time from it). Existing files are never overwritten.
pub fn maildir(store: &Store, mailbox: &Mailbox, dir: &Path) -> Result<Exported, ExportError> {
    for sub in ["cur", "new", "tmp"] {
        let d = dir.join(sub);
        fs::create_dir_all(&d).map_err(|e| ExportError::Output(d.clone(), e))?;
    }
    let mut exported = Exported::default();
    let mut unopened = Vec::new();
    for_each_message(store, mailbox, &mut unopened, |rec, file| {
        let name = maildir_name(rec);
        let base = name.split(':').next().unwrap_or(&name).to_owned();
        let tmp = dir.join("tmp").join(&base);
        let cur = dir.join("cur").join(&name);
        if cur.exists() {
            return Err(ExportError::Output(
                cur,
                io::Error::from(io::ErrorKind::AlreadyExists),
            ));
        }
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| ExportError::Output(tmp.clone(), e))?;
        let mut conv = ToUnix::new(io::BufWriter::new(out), false);
        let read_error = copy_converted(file, &mut conv, &tmp)?;
        let written = conv
            .finish(false)
            .and_then(|w| w.into_inner().map_err(io::IntoInnerError::into_error))
            .map(|f| {
                // Best effort: the message is complete without it.
                if let Some(t) =
                    UNIX_EPOCH.checked_add(Duration::from_secs(rec.record.internaldate))
                {
                    let _ = f.set_modified(t);
                }
            });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(ExportError::Output(tmp, e));
        }
        if let Some(e) = read_error {
            // Half a message must not look like a whole one.
            let _ = fs::remove_file(&tmp);
            exported.unreadable.push((rec.record.uid, e.to_string()));
            return Ok(());
        }
        fs::rename(&tmp, &cur).map_err(|e| ExportError::Output(cur.clone(), e))?;
        exported.messages += 1;
        Ok(())
    })?;
    exported.unreadable.extend(unopened);
    exported.unreadable.sort_unstable();
    Ok(exported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maildir_flag_letters_are_sorted() {
        let all = SystemFlags::SEEN
            | SystemFlags::DELETED
            | SystemFlags::ANSWERED
            | SystemFlags::FLAGGED
            | SystemFlags::DRAFT;
        assert_eq!(maildir_flags(all), "DFRST");
        assert_eq!(maildir_flags(SystemFlags::SEEN), "S");
        assert_eq!(maildir_flags(SystemFlags::empty()), "");
    }
}
