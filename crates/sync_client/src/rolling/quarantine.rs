//! Users (and shared mailboxes) that rolling replication has set aside.
//!
//! When a user keeps failing on the replica, rolling mode stops trying it so everyone
//! else keeps flowing. Nothing is lost: the user's sync_log records are moved into
//! `<logdir>/quarantine-log` (sync_log format) and the user is listed in
//! `<logdir>/quarantine`, one line per user:
//!
//! ```text
//! 2024-05-01T12:00:00Z<TAB>john<TAB>user.john.Sent<TAB>APPLY MAILBOX<TAB>NO IMAP_IOERROR ...
//! ```
//!
//! (timestamp, userid, mailbox, command, the replica's reply; a shared mailbox has an
//! empty userid and its name in the mailbox field). Later runs skip listed users and
//! move their new records to the quarantine log as well.
//!
//! Releasing a user (`sync_client --release USER`, deleting its line by hand, or
//! automatically after `csync_quarantine_retry`) appends the held records and a
//! `USER <userid>` record (`MAILBOX <name>` for a shared mailbox) to the channel's
//! log, where the next run picks them up.
//!
//! Every change happens under an exclusive `flock` on `<logdir>/quarantine.lock`, so
//! a running daemon and `--release` do not interleave. Files are replaced atomically
//! (temporary file, fsync, rename); the order of the steps makes a crash at any point
//! replay records rather than lose them.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use csync_synclog::{Channel, SyncLog, SyncLogError, SyncLogRecord, mailbox_owner};
use nix::fcntl::{Flock, FlockArg};
use tracing::warn;

/// Whose work a record or a plan item is: a user's, or one shared mailbox's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    User(String),
    Shared(String),
}

impl Subject {
    /// The subject owning a mailbox name (§8.2): its user, else the mailbox itself.
    pub fn of_mailbox(name: &str, deleted_prefix: &str) -> Subject {
        match mailbox_owner(name, deleted_prefix) {
            Some(user) => Subject::User(user),
            None => Subject::Shared(name.to_owned()),
        }
    }

    /// The record that makes a released subject be synced again in full.
    pub fn resync_record(&self) -> SyncLogRecord {
        match self {
            Subject::User(u) => SyncLogRecord::user(u.clone()),
            Subject::Shared(m) => SyncLogRecord::mailbox(m.clone()),
        }
    }

    /// The userid, or `None` for a shared mailbox.
    pub fn user(&self) -> Option<&str> {
        match self {
            Subject::User(u) => Some(u),
            Subject::Shared(_) => None,
        }
    }

    /// Whether `name` (as given to `--release`) names this subject.
    pub fn is_named(&self, name: &str) -> bool {
        match self {
            Subject::User(u) | Subject::Shared(u) => u == name,
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::User(u) => write!(f, "user {u}"),
            Subject::Shared(m) => write!(f, "shared mailbox {m}"),
        }
    }
}

/// The subjects a record concerns (a cross-user RENAME concerns both users).
/// `ANNOTATION ""` (server annotations) concerns nobody.
pub fn subjects_of(record: &SyncLogRecord, deleted_prefix: &str) -> Vec<Subject> {
    let of = |name: &str| Subject::of_mailbox(name, deleted_prefix);
    match record {
        SyncLogRecord::User { userid }
        | SyncLogRecord::Unuser { userid }
        | SyncLogRecord::Meta { userid }
        | SyncLogRecord::Sieve { userid }
        | SyncLogRecord::Seen { userid, .. }
        | SyncLogRecord::Sub { userid, .. }
        | SyncLogRecord::Unsub { userid, .. } => vec![Subject::User(userid.clone())],
        SyncLogRecord::Append { mailbox }
        | SyncLogRecord::Mailbox { mailbox }
        | SyncLogRecord::Unmailbox { mailbox } => vec![of(mailbox)],
        SyncLogRecord::Quota { root } => vec![of(root)],
        SyncLogRecord::Annotation { mailbox } if mailbox.is_empty() => Vec::new(),
        SyncLogRecord::Annotation { mailbox } => vec![of(mailbox)],
        SyncLogRecord::DoubleMailbox { source, .. } => vec![of(source)],
        SyncLogRecord::Rename { old, new } => {
            let (a, b) = (of(old), of(new));
            if a == b { vec![a] } else { vec![a, b] }
        }
    }
}

/// One quarantined subject: when, and the failure that put it there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineEntry {
    /// Seconds since the epoch.
    pub since: u64,
    pub subject: Subject,
    /// The mailbox the failing command was about (for a shared subject: its name).
    pub mailbox: String,
    pub command: String,
    pub reply: String,
}

impl QuarantineEntry {
    pub fn new(subject: Subject, mailbox: &str, command: &str, reply: &str) -> QuarantineEntry {
        let mailbox = match &subject {
            Subject::Shared(name) => name.clone(),
            Subject::User(_) => mailbox.to_owned(),
        };
        QuarantineEntry {
            since: now(),
            subject,
            mailbox,
            command: command.to_owned(),
            reply: reply.to_owned(),
        }
    }

    /// The line of the quarantine file (without the line feed).
    pub fn to_line(&self) -> String {
        let user = self.subject.user().unwrap_or_default();
        format!(
            "{}\t{}\t{}\t{}\t{}",
            format_time(self.since),
            clean(user),
            clean(&self.mailbox),
            clean(&self.command),
            clean(&self.reply)
        )
    }

    /// Reads a line of the quarantine file; `None` if it is not one.
    pub fn parse(line: &str) -> Option<QuarantineEntry> {
        let mut fields = line.splitn(5, '\t');
        let since = parse_time(fields.next()?)?;
        let user = fields.next()?;
        let mailbox = fields.next()?;
        let command = fields.next().unwrap_or_default();
        let reply = fields.next().unwrap_or_default();
        let subject = if user.is_empty() {
            if mailbox.is_empty() {
                return None;
            }
            Subject::Shared(mailbox.to_owned())
        } else {
            Subject::User(user.to_owned())
        };
        Some(QuarantineEntry {
            since,
            subject,
            mailbox: mailbox.to_owned(),
            command: command.to_owned(),
            reply: reply.to_owned(),
        })
    }
}

/// Tabs and line breaks would break the one-line-per-user format.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn format_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Reads [`format_time`]'s form, or plain seconds since the epoch.
pub fn parse_time(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(secs);
    }
    let b = text.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as i64, d as i64);
    u64::try_from(days)
        .ok()
        .map(|days| days * 86_400 + h * 3600 + mi * 60 + s)
}

// Howard Hinnant's date algorithms (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What can go wrong with the quarantine files.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    SyncLog(#[from] SyncLogError),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> QuarantineError {
    let path = path.to_owned();
    move |source| QuarantineError::Io { op, path, source }
}

/// The quarantine of one channel: files beside its log.
#[derive(Clone, Debug)]
pub struct Quarantine {
    list: PathBuf,
    held: PathBuf,
    lock: PathBuf,
    deleted_prefix: String,
}

/// An exclusive lock on the quarantine files, released when dropped.
struct Locked(Option<Flock<File>>);

impl Drop for Locked {
    fn drop(&mut self) {
        if let Some(lock) = self.0.take()
            && let Err((lock, errno)) = lock.unlock()
        {
            // Closing the descriptor releases the lock anyway; never panic here.
            warn!("releasing the quarantine lock: {errno}");
            std::mem::forget(lock);
        }
    }
}

impl Quarantine {
    /// The quarantine kept in `log_dir` (the directory of the channel's `log`).
    pub fn new(log_dir: &Path, deleted_prefix: &str) -> Quarantine {
        Quarantine {
            list: log_dir.join("quarantine"),
            held: log_dir.join("quarantine-log"),
            lock: log_dir.join("quarantine.lock"),
            deleted_prefix: deleted_prefix.to_owned(),
        }
    }

    /// `<logdir>/quarantine`.
    pub fn list_path(&self) -> &Path {
        &self.list
    }

    /// `<logdir>/quarantine-log`.
    pub fn held_path(&self) -> &Path {
        &self.held
    }

    fn locked(&self) -> Result<Locked, QuarantineError> {
        if let Some(dir) = self.lock.parent() {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(io_err("open", &self.lock))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| {
            QuarantineError::Io {
                op: "lock",
                path: self.lock.clone(),
                source: io::Error::from(errno),
            }
        })?;
        Ok(Locked(Some(lock)))
    }

    /// The quarantined subjects (an absent file: none). Lines that cannot be read are
    /// reported and ignored.
    pub fn entries(&self) -> Result<Vec<QuarantineEntry>, QuarantineError> {
        let text = match fs::read_to_string(&self.list) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &self.list)(e)),
        };
        let mut out: Vec<QuarantineEntry> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            match QuarantineEntry::parse(line) {
                Some(entry) => {
                    out.retain(|e| e.subject != entry.subject);
                    out.push(entry);
                }
                None => warn!(
                    "{}:{}: not a quarantine line (timestamp, user, mailbox, command, reply): ignored",
                    self.list.display(),
                    n + 1
                ),
            }
        }
        Ok(out)
    }

    /// The quarantined subjects as a set.
    pub fn subjects(&self) -> Result<BTreeSet<Subject>, QuarantineError> {
        Ok(self.entries()?.into_iter().map(|e| e.subject).collect())
    }

    fn write_entries(&self, entries: &[QuarantineEntry]) -> Result<(), QuarantineError> {
        if entries.is_empty() {
            return remove_if_exists(&self.list);
        }
        let mut text = String::new();
        for e in entries {
            text.push_str(&e.to_line());
            text.push('\n');
        }
        replace_file(&self.list, text.as_bytes())
    }

    fn held_records(&self) -> Result<Vec<SyncLogRecord>, QuarantineError> {
        match csync_synclog::read_file(&self.held) {
            Ok(contents) => Ok(contents.records),
            Err(SyncLogError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Keeps records of quarantined subjects in the quarantine log.
    pub fn hold(&self, records: &[SyncLogRecord]) -> Result<(), QuarantineError> {
        if records.is_empty() {
            return Ok(());
        }
        let _lock = self.locked()?;
        self.append_held(records)
    }

    fn append_held(&self, records: &[SyncLogRecord]) -> Result<(), QuarantineError> {
        let text = csync_synclog::encode_records(records).map_err(SyncLogError::from)?;
        csync_synclog::append_locked(&self.held, text.as_bytes())?;
        Ok(())
    }

    /// Quarantines `entry.subject`: its `records` go to the quarantine log first, then
    /// the subject is listed (replacing an older line for it).
    pub fn add(
        &self,
        entry: QuarantineEntry,
        records: &[SyncLogRecord],
    ) -> Result<(), QuarantineError> {
        let _lock = self.locked()?;
        if !records.is_empty() {
            self.append_held(records)?;
        }
        let mut entries = self.entries()?;
        entries.retain(|e| e.subject != entry.subject);
        entries.push(entry);
        self.write_entries(&entries)
    }

    /// Releases the subjects named in `names` (a userid, or a shared mailbox's name):
    /// their held records and a full resync record go back to `channel`'s log.
    /// Records held for subjects no longer listed are released too. Returns the
    /// subjects released.
    pub fn release(
        &self,
        names: &[String],
        log: &SyncLog,
        channel: &Channel,
    ) -> Result<Vec<Subject>, QuarantineError> {
        self.release_where(log, channel, true, |e| {
            names.iter().any(|n| e.subject.is_named(n))
        })
    }

    /// Releases what is due: subjects quarantined at least `retry` ago and, with
    /// `orphans`, records held for subjects no longer listed (an admin deleted the line
    /// by hand). Without either, the quarantine log is not read.
    pub fn release_due(
        &self,
        retry: Option<std::time::Duration>,
        orphans: bool,
        log: &SyncLog,
        channel: &Channel,
    ) -> Result<Vec<Subject>, QuarantineError> {
        if !self.list.exists() && !self.held.exists() {
            return Ok(Vec::new());
        }
        let now = now();
        let due =
            |e: &QuarantineEntry| retry.is_some_and(|r| e.since.saturating_add(r.as_secs()) <= now);
        if !orphans && !self.entries()?.iter().any(due) {
            return Ok(Vec::new());
        }
        self.release_where(log, channel, orphans, due)
    }

    /// A cheap signature of the quarantine file (size and modification time), to
    /// notice hand edits.
    pub fn signature(&self) -> Option<(u64, SystemTime)> {
        let meta = fs::metadata(&self.list).ok()?;
        Some((meta.len(), meta.modified().ok()?))
    }

    fn release_where(
        &self,
        log: &SyncLog,
        channel: &Channel,
        orphans: bool,
        released: impl Fn(&QuarantineEntry) -> bool,
    ) -> Result<Vec<Subject>, QuarantineError> {
        let _lock = self.locked()?;
        let entries = self.entries()?;
        let (gone, kept): (Vec<QuarantineEntry>, Vec<QuarantineEntry>) =
            entries.into_iter().partition(|e| released(e));
        let kept_subjects: BTreeSet<&Subject> = kept.iter().map(|e| &e.subject).collect();
        let gone_subjects: BTreeSet<&Subject> = gone.iter().map(|e| &e.subject).collect();
        let held = self.held_records()?;
        let held_len = held.len();
        let mut back: Vec<SyncLogRecord> = Vec::new();
        let mut rest: Vec<SyncLogRecord> = Vec::new();
        // Subjects with held records but no line any more (released by hand).
        let mut unlisted: BTreeSet<Subject> = BTreeSet::new();
        for record in held {
            let subjects = subjects_of(&record, &self.deleted_prefix);
            let keep = subjects.iter().any(|s| kept_subjects.contains(s));
            let free = subjects
                .iter()
                .any(|s| gone_subjects.contains(s) || (orphans && !kept_subjects.contains(s)))
                || (orphans && subjects.is_empty());
            if orphans {
                unlisted.extend(
                    subjects
                        .iter()
                        .filter(|s| !kept_subjects.contains(s) && !gone_subjects.contains(s))
                        .cloned(),
                );
            }
            if free {
                back.push(record.clone());
            }
            if keep || !free {
                rest.push(record);
            }
        }
        let mut subjects: Vec<Subject> = gone.iter().map(|e| e.subject.clone()).collect();
        subjects.extend(unlisted);
        if subjects.is_empty() && back.is_empty() {
            return Ok(subjects);
        }
        back.extend(subjects.iter().map(Subject::resync_record));
        // The records are safe in the channel's log before they leave the quarantine.
        log.append_to_channel(channel, &back)?;
        if rest.len() != held_len {
            if rest.is_empty() {
                remove_if_exists(&self.held)?;
            } else {
                let text = csync_synclog::encode_records(&rest).map_err(SyncLogError::from)?;
                replace_file(&self.held, text.as_bytes())?;
            }
        }
        if !gone.is_empty() {
            self.write_entries(&kept)?;
        }
        Ok(subjects)
    }
}

fn remove_if_exists(path: &Path) -> Result<(), QuarantineError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Writes `bytes` to a temporary file, fsyncs it, renames it over `path` and fsyncs
/// the directory.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), QuarantineError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(bytes).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err("rename", &tmp))?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> Result<(), QuarantineError> {
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trip() {
        for secs in [0, 86_399, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse_time(&format_time(secs)), Some(secs), "{secs}");
        }
        assert_eq!(format_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_time("2023-13-14T22:13:20Z"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn entry_lines() {
        let e = QuarantineEntry {
            since: 1_700_000_000,
            subject: Subject::User("john".into()),
            mailbox: "user.john.Sent".into(),
            command: "APPLY MAILBOX".into(),
            reply: "NO IMAP_PROTOCOL_BAD_PARAMETERS\tbad\npartition".into(),
        };
        let line = e.to_line();
        assert_eq!(
            line,
            "2023-11-14T22:13:20Z\tjohn\tuser.john.Sent\tAPPLY MAILBOX\tNO IMAP_PROTOCOL_BAD_PARAMETERS bad partition"
        );
        let back = QuarantineEntry::parse(&line).unwrap();
        assert_eq!(back.subject, e.subject);
        assert_eq!(back.since, e.since);
        let shared = QuarantineEntry::parse("5\t\tshared.lists\t-\tx").unwrap();
        assert_eq!(shared.subject, Subject::Shared("shared.lists".into()));
        assert!(QuarantineEntry::parse("5\t\t\t-\tx").is_none());
        assert!(QuarantineEntry::parse("garbage").is_none());
    }

    #[test]
    fn record_subjects() {
        let s = |r: SyncLogRecord| subjects_of(&r, "DELETED");
        assert_eq!(
            s(SyncLogRecord::append("user.john.Sent")),
            [Subject::User("john".into())]
        );
        assert_eq!(
            s(SyncLogRecord::quota("shared")),
            [Subject::Shared("shared".into())]
        );
        assert_eq!(
            s(SyncLogRecord::rename("user.a.x", "user.b.x")),
            [Subject::User("a".into()), Subject::User("b".into())]
        );
        assert_eq!(
            s(SyncLogRecord::rename("user.a.x", "DELETED.user.a.x.5F")),
            [Subject::User("a".into())]
        );
        assert!(s(SyncLogRecord::annotation("")).is_empty());
        assert_eq!(
            s(SyncLogRecord::seen("bob", "uid1")),
            [Subject::User("bob".into())]
        );
    }

    #[test]
    fn add_hold_release() {
        let dir = tempfile::tempdir().unwrap();
        let log = SyncLog::new(dir.path(), vec![Channel::Default]);
        let log_dir = dir.path().join("sync");
        let q = Quarantine::new(&log_dir, "DELETED");
        assert!(q.entries().unwrap().is_empty());
        q.add(
            QuarantineEntry::new(
                Subject::User("john".into()),
                "user.john",
                "APPLY MAILBOX",
                "NO x",
            ),
            &[
                SyncLogRecord::append("user.john"),
                SyncLogRecord::meta("john"),
            ],
        )
        .unwrap();
        q.add(
            QuarantineEntry::new(
                Subject::Shared("shared.x".into()),
                "",
                "APPLY MAILBOX",
                "NO y",
            ),
            &[SyncLogRecord::mailbox("shared.x")],
        )
        .unwrap();
        q.hold(&[SyncLogRecord::seen("john", "u1")]).unwrap();
        let subjects = q.subjects().unwrap();
        assert!(subjects.contains(&Subject::User("john".into())));
        assert!(subjects.contains(&Subject::Shared("shared.x".into())));
        // Nothing is due yet.
        assert!(
            q.release_due(
                Some(std::time::Duration::from_secs(3600)),
                true,
                &log,
                &Channel::Default
            )
            .unwrap()
            .is_empty()
        );
        let released = q
            .release(&["john".into()], &log, &Channel::Default)
            .unwrap();
        assert_eq!(released, [Subject::User("john".into())]);
        let back = csync_synclog::read_file(log_dir.join("log"))
            .unwrap()
            .records;
        assert_eq!(
            back,
            [
                SyncLogRecord::append("user.john"),
                SyncLogRecord::meta("john"),
                SyncLogRecord::seen("john", "u1"),
                SyncLogRecord::user("john"),
            ]
        );
        assert_eq!(
            csync_synclog::read_file(q.held_path()).unwrap().records,
            [SyncLogRecord::mailbox("shared.x")]
        );
        assert_eq!(
            q.subjects().unwrap().into_iter().collect::<Vec<_>>(),
            [Subject::Shared("shared.x".into())]
        );
        // The admin deletes the remaining line by hand: its records come back too.
        fs::write(q.list_path(), "").unwrap();
        assert!(
            q.release_due(None, false, &log, &Channel::Default)
                .unwrap()
                .is_empty()
        );
        let released = q.release_due(None, true, &log, &Channel::Default).unwrap();
        assert_eq!(released, [Subject::Shared("shared.x".into())]);
        assert!(!q.held_path().exists());
        let back = csync_synclog::read_file(log_dir.join("log"))
            .unwrap()
            .records;
        assert_eq!(back.len(), 6);
        // Expiry.
        q.add(
            QuarantineEntry {
                since: 10,
                ..QuarantineEntry::new(Subject::User("old".into()), "user.old", "-", "-")
            },
            &[],
        )
        .unwrap();
        let released = q
            .release_due(
                Some(std::time::Duration::from_secs(60)),
                false,
                &log,
                &Channel::Default,
            )
            .unwrap();
        assert_eq!(released, [Subject::User("old".into())]);
        assert!(!q.list_path().exists());
    }
}
