//! Appending records to the sync_log of every configured channel (§6.1, §6.4).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use csync_config::{Channel, Config};

use crate::error::{ChannelFailure, SyncLogError};
use crate::lock;
use crate::record::{SyncLogRecord, encode_records};

/// How often a writer reopens a log that was rotated under it at once (Cyrus's
/// `SYNC_LOG_RETRIES`, where Cyrus gives up and the record is lost). csync then
/// keeps trying with short sleeps for up to [`PERSIST`]: a rolling reader that
/// rotates as fast as records arrive can beat a writer queued behind others for
/// the lock 64 times in a row, and it must not cost that writer its record.
pub const MAX_ATTEMPTS: u32 = 64;

/// How long a writer keeps trying after [`MAX_ATTEMPTS`] quick attempts.
pub const PERSIST: std::time::Duration = std::time::Duration::from_secs(30);

/// `sync_log_unsuppressable_channels` when unset.
pub const DEFAULT_UNSUPPRESSABLE: &str = "squatter";

/// The log file of `channel`: `<configdirectory>/sync/log` for the default
/// channel, `<configdirectory>/sync/<name>/log` for a named one.
pub fn channel_log_path(config_dir: &Path, channel: &Channel) -> PathBuf {
    let sync = config_dir.join("sync");
    match channel.name() {
        None => sync.join("log"),
        Some(name) => sync.join(name).join("log"),
    }
}

/// The sync_log writer of one process: where records go and whether they go at
/// all.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use csync_config::Config;
/// use csync_synclog::{SyncLog, SyncLogRecord};
///
/// let config = Config::from_file("/etc/imapd.conf")?;
/// let log = SyncLog::from_config(&config)?;
/// log.append(&[SyncLogRecord::append("user.john")])?;
/// log.append(&SyncLogRecord::rename_group("user.john.Old", "user.john.New"))?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SyncLog {
    config_dir: PathBuf,
    enabled: bool,
    channels: Vec<Channel>,
    unsuppressable: Vec<Channel>,
    suppressed: bool,
}

impl SyncLog {
    /// The writer a master-side process (imapd, lmtpd, tools) uses: `configdirectory`
    /// (required), `sync_log` (off unless set), `sync_log_channels` (default
    /// channel only when unset) and `sync_log_unsuppressable_channels` (default
    /// `squatter`). Not suppressed.
    pub fn from_config(config: &Config) -> Result<SyncLog, SyncLogError> {
        let unsuppressable = match config.channel_list("sync_log_unsuppressable_channels")? {
            Some(list) => list,
            None => vec![Channel::Named(DEFAULT_UNSUPPRESSABLE.to_owned())],
        };
        Ok(SyncLog {
            config_dir: config.config_directory()?.to_path_buf(),
            enabled: config.switch_or("sync_log", false)?,
            channels: config.sync_log_channels()?,
            unsuppressable,
            suppressed: false,
        })
    }

    /// The writer of a replica's sync_server: as [`from_config`](Self::from_config),
    /// suppressed unless `sync_log_chain` is on (chained replication), so only the
    /// unsuppressable channels are written.
    pub fn for_sync_server(config: &Config) -> Result<SyncLog, SyncLogError> {
        let chain = config.switch_or("sync_log_chain", false)?;
        Ok(SyncLog::from_config(config)?.suppressed(!chain))
    }

    /// An enabled writer for the given channels, without a configuration file.
    pub fn new(config_dir: impl Into<PathBuf>, channels: Vec<Channel>) -> SyncLog {
        SyncLog {
            config_dir: config_dir.into(),
            enabled: true,
            channels,
            unsuppressable: vec![Channel::Named(DEFAULT_UNSUPPRESSABLE.to_owned())],
            suppressed: false,
        }
    }

    /// Suppresses logging except to the unsuppressable channels (what Cyrus's
    /// `sync_log_suppress` does in a non-chaining sync_server).
    pub fn suppressed(mut self, suppressed: bool) -> SyncLog {
        self.suppressed = suppressed;
        self
    }

    /// Whether `sync_log` is on. When it is off, [`append`](Self::append) writes
    /// nothing.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether [`suppressed`](Self::suppressed) is in effect.
    pub fn is_suppressed(&self) -> bool {
        self.suppressed
    }

    /// `configdirectory`.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The configured channels, whether or not they are written.
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// The channels an [`append`](Self::append) writes to now.
    pub fn active_channels(&self) -> impl Iterator<Item = &Channel> {
        self.channels.iter().filter(|channel| {
            self.enabled && (!self.suppressed || self.unsuppressable.contains(channel))
        })
    }

    /// The log file of `channel`.
    pub fn log_path(&self, channel: &Channel) -> PathBuf {
        channel_log_path(&self.config_dir, channel)
    }

    /// Appends `records` as one group (one locked write per channel) to every
    /// active channel. Records that cannot be written are refused before anything
    /// is written. Every channel is tried; failures are reported together in
    /// [`SyncLogError::Channels`].
    pub fn append(&self, records: &[SyncLogRecord]) -> Result<(), SyncLogError> {
        let text = encode_records(records)?;
        self.append_text(&text)
    }

    /// Appends text that is already in log format (e.g. `cyr_synclog`'s raw line) to
    /// every active channel; a line feed is added if it does not end with one.
    /// The caller is responsible for the text being valid records.
    pub fn append_text(&self, text: &str) -> Result<(), SyncLogError> {
        if text.is_empty() {
            return Ok(());
        }
        let owned;
        let text = if text.ends_with('\n') {
            text
        } else {
            owned = format!("{text}\n");
            &owned
        };
        let failures: Vec<ChannelFailure> = self
            .active_channels()
            .filter_map(|channel| {
                append_locked(&self.log_path(channel), text.as_bytes())
                    .err()
                    .map(|error| ChannelFailure {
                        channel: channel.clone(),
                        error: Box::new(error),
                    })
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(SyncLogError::Channels(failures))
        }
    }

    /// Appends to one channel regardless of `sync_log`, suppression and the
    /// channel list: what Cyrus's `sync_log_channel` does, used by a sync_client to
    /// re-log ("defer") work for its own channel.
    pub fn append_to_channel(
        &self,
        channel: &Channel,
        records: &[SyncLogRecord],
    ) -> Result<(), SyncLogError> {
        let text = encode_records(records)?;
        if text.is_empty() {
            return Ok(());
        }
        append_locked(&self.log_path(channel), text.as_bytes())
    }
}

fn open_for_append(path: &Path) -> Result<File, SyncLogError> {
    let open = || {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
    };
    match open() {
        Ok(file) => Ok(file),
        Err(err) if err.kind() == ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .map_err(SyncLogError::io("create directory", dir))?;
            }
            open().map_err(SyncLogError::io("open", path))
        }
        Err(err) => Err(SyncLogError::io("open", path)(err)),
    }
}

/// Appends `text` to the log file at `path` with Cyrus's protocol (§6.4): open
/// for appending (creating the file 0640 and its directories 0755, less the
/// umask), wait for an exclusive lock on the whole file, make sure the file is
/// still the one at `path` (a reader may have renamed it to `log-run` meanwhile;
/// then start again: [`MAX_ATTEMPTS`] times at once, then with sleeps of up to
/// 20 ms for up to [`PERSIST`]), write everything, fsync, unlock, close.
pub fn append_locked(path: &Path, text: &[u8]) -> Result<(), SyncLogError> {
    let mut attempts: u32 = 0;
    let mut persist_until = None;
    loop {
        attempts += 1;
        let file = open_for_append(path)?;
        lock::lock_exclusive(&file).map_err(SyncLogError::io("lock", path))?;
        let opened = file.metadata().map_err(SyncLogError::io("stat", path))?;
        // Any failure to stat the path (usually: renamed away and not yet
        // recreated) means "not the same file", as in Cyrus.
        let current = std::fs::metadata(path).ok();
        let same = current.is_some_and(|m| m.ino() == opened.ino() && m.dev() == opened.dev());
        if same {
            let mut writer = &file;
            writer
                .write_all(text)
                .map_err(SyncLogError::io("write", path))?;
            file.sync_all().map_err(SyncLogError::io("fsync", path))?;
            lock::unlock(&file).map_err(SyncLogError::io("unlock", path))?;
            return Ok(());
        }
        lock::unlock(&file).map_err(SyncLogError::io("unlock", path))?;
        drop(file);
        if attempts < MAX_ATTEMPTS {
            continue;
        }
        let deadline = *persist_until.get_or_insert_with(|| std::time::Instant::now() + PERSIST);
        if std::time::Instant::now() >= deadline {
            return Err(SyncLogError::KeptRotating {
                path: path.to_path_buf(),
                attempts,
            });
        }
        // Out of the lock queue for a moment, so the reader finishes its run and
        // the next attempt finds a log that stays put. The sleep varies between
        // writers (by pid and attempt) so they do not return in lockstep.
        let spread = (std::process::id().wrapping_mul(2_654_435_761) ^ attempts) % 5;
        let step = (attempts - MAX_ATTEMPTS).min(15) + spread;
        std::thread::sleep(std::time::Duration::from_millis(u64::from(step).max(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn config(dir: &Path, extra: &str) -> Config {
        Config::parse(
            &format!("configdirectory: {}\n{extra}", dir.display()),
            dir.join("imapd.conf"),
        )
        .unwrap()
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn paths_per_channel() {
        let dir = Path::new("/var/lib/cyrus");
        assert_eq!(
            channel_log_path(dir, &Channel::Default),
            Path::new("/var/lib/cyrus/sync/log")
        );
        assert_eq!(
            channel_log_path(dir, &Channel::Named("repl1".into())),
            Path::new("/var/lib/cyrus/sync/repl1/log")
        );
    }

    #[test]
    fn nothing_is_written_unless_sync_log_is_on() {
        let dir = tempfile::tempdir().unwrap();
        for extra in ["", "sync_log: off\n", "sync_log: 0\n"] {
            let log = SyncLog::from_config(&config(dir.path(), extra)).unwrap();
            assert!(!log.is_enabled());
            assert_eq!(log.active_channels().count(), 0);
            log.append(&[SyncLogRecord::user("john")]).unwrap();
            assert!(!dir.path().join("sync").exists());
        }
    }

    #[test]
    fn appends_go_to_every_channel_and_create_directories() {
        let dir = tempfile::tempdir().unwrap();
        let log = SyncLog::from_config(&config(
            dir.path(),
            "sync_log: 1\nsync_log_channels: \"\" repl1 squatter\n",
        ))
        .unwrap();
        log.append(&[SyncLogRecord::mailbox("user.john")]).unwrap();
        log.append(&SyncLogRecord::rename_group("user.john.A b", "user.john.C"))
            .unwrap();
        let expected = "MAILBOX user.john\n\
                        RENAME \"user.john.A b\" user.john.C\n\
                        MAILBOX \"user.john.A b\"\n\
                        MAILBOX user.john.C\n";
        for sub in ["sync/log", "sync/repl1/log", "sync/squatter/log"] {
            assert_eq!(read(&dir.path().join(sub)), expected, "{sub}");
        }
        let mode = |p: &str| {
            fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        // 0640 / 0755 less the umask (022 or 077 usually)
        assert_eq!(mode("sync/repl1/log") & !0o640, 0);
        assert_eq!(mode("sync/repl1") & !0o755, 0);
    }

    #[test]
    fn named_channels_only_leave_the_default_log_alone() {
        let dir = tempfile::tempdir().unwrap();
        let log = SyncLog::from_config(&config(
            dir.path(),
            "sync_log: yes\nsync_log_channels: repl1\n",
        ))
        .unwrap();
        log.append(&[SyncLogRecord::user("john")]).unwrap();
        assert!(!dir.path().join("sync/log").exists());
        assert_eq!(read(&dir.path().join("sync/repl1/log")), "USER john\n");
    }

    #[test]
    fn suppression_keeps_only_unsuppressable_channels() {
        let dir = tempfile::tempdir().unwrap();
        let conf = config(
            dir.path(),
            "sync_log: 1\nsync_log_channels: \"\" repl1 squatter\n",
        );
        let replica = SyncLog::for_sync_server(&conf).unwrap();
        assert!(replica.is_suppressed());
        let active: Vec<_> = replica.active_channels().cloned().collect();
        assert_eq!(active, vec![Channel::Named("squatter".into())]);

        let chained = SyncLog::for_sync_server(&config(
            dir.path(),
            "sync_log: 1\nsync_log_chain: on\nsync_log_channels: \"\" repl1\n",
        ))
        .unwrap();
        assert!(!chained.is_suppressed());
        assert_eq!(chained.active_channels().count(), 2);

        let custom = SyncLog::for_sync_server(&config(
            dir.path(),
            "sync_log: 1\nsync_log_channels: \"\" repl1\n\
             sync_log_unsuppressable_channels: \"\"\n",
        ))
        .unwrap();
        let active: Vec<_> = custom.active_channels().cloned().collect();
        assert_eq!(active, vec![Channel::Default]);
        custom.append(&[SyncLogRecord::user("x")]).unwrap();
        assert_eq!(read(&dir.path().join("sync/log")), "USER x\n");
        assert!(!dir.path().join("sync/repl1/log").exists());
    }

    #[test]
    fn append_to_channel_ignores_gating() {
        let dir = tempfile::tempdir().unwrap();
        let log = SyncLog::from_config(&config(dir.path(), "sync_log: off\n")).unwrap();
        let channel = Channel::Named("repl1".into());
        log.append_to_channel(&channel, &[SyncLogRecord::mailbox("user.john")])
            .unwrap();
        assert_eq!(
            read(&dir.path().join("sync/repl1/log")),
            "MAILBOX user.john\n"
        );
    }

    #[test]
    fn unwritable_records_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = SyncLog::new(dir.path(), vec![Channel::Default]);
        let err = log
            .append(&[
                SyncLogRecord::user("ok"),
                SyncLogRecord::mailbox("bad\nname"),
            ])
            .unwrap_err();
        assert!(matches!(err, SyncLogError::Record(_)));
        assert!(!dir.path().join("sync/log").exists());
    }

    #[test]
    fn append_text_adds_the_missing_line_feed() {
        let dir = tempfile::tempdir().unwrap();
        let log = SyncLog::new(dir.path(), vec![Channel::Default]);
        log.append_text("MAILBOX user.john.100%done").unwrap();
        log.append_text("USER a\nUSER b\n").unwrap();
        log.append_text("").unwrap();
        assert_eq!(
            read(&dir.path().join("sync/log")),
            "MAILBOX user.john.100%done\nUSER a\nUSER b\n"
        );
    }

    #[test]
    fn failures_are_reported_per_channel_and_others_still_written() {
        let dir = tempfile::tempdir().unwrap();
        // a regular file where the channel directory should be
        fs::create_dir_all(dir.path().join("sync")).unwrap();
        fs::write(dir.path().join("sync/broken"), b"").unwrap();
        let log = SyncLog::new(
            dir.path(),
            vec![Channel::Named("broken".into()), Channel::Default],
        );
        match log.append(&[SyncLogRecord::user("john")]).unwrap_err() {
            SyncLogError::Channels(failures) => {
                assert_eq!(failures.len(), 1);
                assert_eq!(failures[0].channel, Channel::Named("broken".into()));
                assert!(matches!(*failures[0].error, SyncLogError::Io { .. }));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(read(&dir.path().join("sync/log")), "USER john\n");
    }

    #[test]
    fn missing_configdirectory_is_an_error() {
        let conf = Config::parse("sync_log: 1\n", "/x/imapd.conf").unwrap();
        assert!(matches!(
            SyncLog::from_config(&conf),
            Err(SyncLogError::Config(_))
        ));
        let conf =
            Config::parse("configdirectory: /x\nsync_log: maybe\n", "/x/imapd.conf").unwrap();
        assert!(matches!(
            SyncLog::from_config(&conf),
            Err(SyncLogError::Config(_))
        ));
    }
}
