//! Taking a channel's log for processing (§6.4, reader side), and reading log files
//! in place (`sync_client -f`).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use csync_config::Channel;

use crate::error::SyncLogError;
use crate::lock;
use crate::record::{LogContents, SyncLogRecord, parse_log};
use crate::writer::channel_log_path;

/// The reader of one channel's log: `log`, and `log-run` while it is processed.
#[derive(Clone, Debug)]
pub struct LogReader {
    log: PathBuf,
    run: PathBuf,
}

impl LogReader {
    /// The reader of the log at `log_path`; the work file is `<log_path>-run`.
    pub fn new(log_path: impl Into<PathBuf>) -> LogReader {
        let log = log_path.into();
        let mut run = log.clone().into_os_string();
        run.push("-run");
        LogReader {
            log,
            run: PathBuf::from(run),
        }
    }

    /// The reader of `channel`'s log under `config_dir`.
    pub fn for_channel(config_dir: &Path, channel: &Channel) -> LogReader {
        LogReader::new(channel_log_path(config_dir, channel))
    }

    /// The file writers append to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The work file.
    pub fn run_path(&self) -> &Path {
        &self.run
    }

    /// Takes the next batch of work: a `log-run` left by an earlier run that did
    /// not finish is taken again ("reprocessing"; replaying is harmless);
    /// otherwise `log` is renamed to `log-run`; with neither there is nothing to do
    /// (`None`). The work file is then locked once, which waits for any writer that
    /// opened it before the rename, and read completely.
    ///
    /// Process the records, then call [`LogRun::finish`]; if processing fails,
    /// drop the run instead and the work file stays for the next attempt.
    pub fn begin(&self) -> Result<Option<LogRun>, SyncLogError> {
        let reprocessing = match fs::symlink_metadata(&self.run) {
            Ok(_) => true,
            Err(err) if err.kind() == ErrorKind::NotFound => false,
            Err(err) => return Err(SyncLogError::io("stat", &self.run)(err)),
        };
        if !reprocessing {
            match fs::rename(&self.log, &self.run) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(SyncLogError::io("rename", &self.log)(err)),
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.run)
            .map_err(SyncLogError::io("open", &self.run))?;
        // Every writer that locked this inode before us has finished; every later
        // one will notice the rename and write to a new `log`.
        lock::lock_exclusive(&file).map_err(SyncLogError::io("lock", &self.run))?;
        lock::unlock(&file).map_err(SyncLogError::io("unlock", &self.run))?;
        let contents = read_all(&mut file, &self.run)?;
        Ok(Some(LogRun {
            path: self.run.clone(),
            reprocessing,
            contents,
        }))
    }
}

/// A log file taken for processing by [`LogReader::begin`].
#[derive(Debug)]
#[must_use = "call finish() once the records are processed, or the work file is processed again"]
pub struct LogRun {
    path: PathBuf,
    reprocessing: bool,
    contents: LogContents,
}

impl LogRun {
    /// The work file (`…/log-run`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is a `log-run` left over from an earlier, unfinished run.
    pub fn is_reprocessing(&self) -> bool {
        self.reprocessing
    }

    /// The records, in file order.
    pub fn records(&self) -> &[SyncLogRecord] {
        &self.contents.records
    }

    /// Everything read, including skipped lines and an incomplete last line.
    pub fn contents(&self) -> &LogContents {
        &self.contents
    }

    /// The work is done: removes the work file.
    pub fn finish(self) -> Result<(), SyncLogError> {
        fs::remove_file(&self.path).map_err(SyncLogError::io("remove", &self.path))
    }
}

fn read_all(file: &mut File, path: &Path) -> Result<LogContents, SyncLogError> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(SyncLogError::io("read", path))?;
    Ok(parse_log(&bytes))
}

/// Reads a log file in place, never renaming or removing it (`sync_client -f`).
/// A shared lock is taken and released first, so an append in progress is not
/// read half-written.
pub fn read_file(path: impl AsRef<Path>) -> Result<LogContents, SyncLogError> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(SyncLogError::io("open", path))?;
    lock::lock_shared(&file).map_err(SyncLogError::io("lock", path))?;
    lock::unlock(&file).map_err(SyncLogError::io("unlock", path))?;
    read_all(&mut file, path)
}

/// Reads log records from a stream (`sync_client -f -`: standard input).
pub fn read_from(mut input: impl Read) -> Result<LogContents, SyncLogError> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(SyncLogError::io("read", "<input>"))?;
    Ok(parse_log(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::SyncLog;

    #[test]
    fn nothing_to_do_without_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let reader = LogReader::for_channel(dir.path(), &Channel::Default);
        assert!(reader.begin().unwrap().is_none());
        assert_eq!(reader.run_path(), dir.path().join("sync/log-run"));
    }

    #[test]
    fn begin_rotates_and_finish_removes() {
        let dir = tempfile::tempdir().unwrap();
        let log = SyncLog::new(dir.path(), vec![Channel::Named("repl1".into())]);
        log.append(&[
            SyncLogRecord::user("john"),
            SyncLogRecord::mailbox("user.john"),
        ])
        .unwrap();
        let reader = LogReader::for_channel(dir.path(), &Channel::Named("repl1".into()));
        let run = reader.begin().unwrap().expect("work");
        assert!(!run.is_reprocessing());
        assert!(!reader.log_path().exists());
        assert!(reader.run_path().exists());
        assert_eq!(
            run.records(),
            [
                SyncLogRecord::user("john"),
                SyncLogRecord::mailbox("user.john")
            ]
        );
        // writers now start a new log
        log.append(&[SyncLogRecord::user("bob")]).unwrap();
        run.finish().unwrap();
        assert!(!reader.run_path().exists());
        let next = reader.begin().unwrap().expect("more work");
        assert_eq!(next.records(), [SyncLogRecord::user("bob")]);
        next.finish().unwrap();
        assert!(reader.begin().unwrap().is_none());
    }

    #[test]
    fn leftover_log_run_is_reprocessed_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = SyncLog::new(dir.path(), vec![Channel::Default]);
        let reader = LogReader::for_channel(dir.path(), &Channel::Default);
        log.append(&[SyncLogRecord::user("first")]).unwrap();
        let run = reader.begin().unwrap().unwrap();
        assert_eq!(run.records(), [SyncLogRecord::user("first")]);
        // processing fails: the run is dropped without finish()
        drop(run);
        log.append(&[SyncLogRecord::user("second")]).unwrap();
        let again = reader.begin().unwrap().unwrap();
        assert!(again.is_reprocessing());
        assert_eq!(again.records(), [SyncLogRecord::user("first")]);
        // the new log is left alone meanwhile
        assert_eq!(
            fs::read_to_string(reader.log_path()).unwrap(),
            "USER second\n"
        );
        again.finish().unwrap();
        let next = reader.begin().unwrap().unwrap();
        assert!(!next.is_reprocessing());
        assert_eq!(next.records(), [SyncLogRecord::user("second")]);
        next.finish().unwrap();
    }

    #[test]
    fn incomplete_last_line_is_not_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let reader = LogReader::for_channel(dir.path(), &Channel::Default);
        fs::create_dir_all(dir.path().join("sync")).unwrap();
        fs::write(
            reader.log_path(),
            b"USER a\r\n\nbogus\nUSER b\nMAILBOX user.b",
        )
        .unwrap();
        let run = reader.begin().unwrap().unwrap();
        assert_eq!(
            run.records(),
            [SyncLogRecord::user("a"), SyncLogRecord::user("b")]
        );
        assert_eq!(run.contents().skipped.len(), 1);
        assert_eq!(run.contents().skipped[0].line, 3);
        assert_eq!(
            run.contents().incomplete_tail.as_deref(),
            Some(&b"MAILBOX user.b"[..])
        );
        run.finish().unwrap();
    }

    #[test]
    fn read_file_leaves_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("saved-log");
        fs::write(&path, b"SEEN john uid1\nSUB john user.john.x\n").unwrap();
        let contents = read_file(&path).unwrap();
        assert_eq!(
            contents.records,
            vec![
                SyncLogRecord::seen("john", "uid1"),
                SyncLogRecord::sub("john", "user.john.x")
            ]
        );
        assert!(path.exists());
        assert!(!dir.path().join("saved-log-run").exists());
        assert!(matches!(
            read_file(dir.path().join("missing")),
            Err(SyncLogError::Io { op: "open", .. })
        ));
    }

    #[test]
    fn read_from_a_stream() {
        let contents = read_from(&b"USER a\nMAILBOX \"b c\"\n"[..]).unwrap();
        assert_eq!(
            contents.records,
            vec![SyncLogRecord::user("a"), SyncLogRecord::mailbox("b c")]
        );
    }
}
