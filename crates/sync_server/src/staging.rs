//! The per-connection staging area ("reserve list", spec §3.6): message files uploaded
//! by `APPLY MESSAGE` or found by `APPLY RESERVE`, keyed by (partition, GUID), waiting
//! for an `APPLY MAILBOX` to take them.
//!
//! Uploads are streamed straight from the decoder to `<partition>/sync./<id>/` and
//! hashed on the way, so a file whose bytes do not match its GUID is never staged.
//! Bytes are gathered in one reused buffer and written in large pieces (one `write`
//! for most messages); a file gets its final name `<guid>` at once, created
//! exclusively (a new inode: an earlier staged file of that name may already be
//! linked into a mailbox), and is removed if its SHA-1 does not match.
//!
//! The directory is the reserve list: `<guid>` is there exactly when that message is
//! staged (the upload in progress aside), so the list takes no memory however many
//! messages a session stages (a Cyrus client uploads a whole 20,000-message mailbox
//! before its `APPLY MAILBOX`), and a lookup is one `stat`.
//! They are not fsynced here: an append hard-links the staged file into the mailbox
//! and the mailstore fsyncs it before its commit, which is the only point where
//! durability is promised. `RESTART`, `EXIT` and the end of the connection remove the
//! directory.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use csync_mailstore::StoreConfig;
use csync_protocol::Guid;
use csync_protocol::decode::{FileHeader, FileSink, SinkError};
use sha1::{Digest, Sha1};

static NEXT_STAGING_ID: AtomicU64 = AtomicU64::new(1);

/// Why a file literal was refused.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("unknown partition {0:?}")]
    UnknownPartition(String),
    #[error("file literal GUID {0:?} is not 40 hex digits")]
    BadGuid(String),
    #[error("message {expected} does not match its bytes (SHA-1 {computed})")]
    GuidMismatch { expected: Guid, computed: Guid },
    #[error("creating the staging directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the record spool {path}: {source}")]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing staged message {guid} to {path}: {source}")]
    Io {
        guid: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StagingError {
    pub fn is_disk_full(&self) -> bool {
        match self {
            StagingError::Io { source, .. }
            | StagingError::Dir { source, .. }
            | StagingError::Spool { source, .. } => source.raw_os_error() == Some(28),
            _ => false,
        }
    }
}

/// Bytes of an upload gathered before a `write` (most messages fit: one write each).
const WRITE_BUFFER: usize = 256 * 1024;

struct Upload {
    guid: Guid,
    path: PathBuf,
    file: File,
    hasher: Sha1,
}

/// One connection's staging area.
pub struct Staging {
    config: StoreConfig,
    id: String,
    upload: Option<Upload>,
    /// Unwritten bytes of the current upload (at most [`WRITE_BUFFER`]).
    buffer: Vec<u8>,
    /// Partitions whose staging directory exists.
    dirs: HashSet<String>,
    /// GUIDs whose upload did not hash to the GUID (reported at append time).
    corrupt: Vec<(Guid, Guid)>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("id", &self.id)
            .field("dirs", &self.dirs)
            .finish()
    }
}

/// Removes staging directories left by a previous process (a crash or kill).
pub fn clean_stale(config: &StoreConfig) {
    for root in config.partitions.values() {
        let _ = fs::remove_dir_all(root.join("sync."));
    }
}

impl Staging {
    pub fn new(config: &StoreConfig) -> Staging {
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT_STAGING_ID.fetch_add(1, Ordering::Relaxed)
        );
        Staging {
            config: config.clone(),
            id,
            upload: None,
            buffer: Vec::new(),
            dirs: HashSet::new(),
            corrupt: Vec::new(),
        }
    }

    /// The staging directory of a partition, created on first use.
    fn ensure_dir(&mut self, partition: &str) -> Result<PathBuf, StagingError> {
        let dir = self.dir(partition)?;
        if !self.dirs.contains(partition) {
            fs::create_dir_all(&dir).map_err(|source| StagingError::Dir {
                path: dir.clone(),
                source,
            })?;
            self.dirs.insert(partition.to_owned());
        }
        Ok(dir)
    }

    fn dir(&self, partition: &str) -> Result<PathBuf, StagingError> {
        let root = self
            .config
            .partition_root(partition)
            .map_err(|_| StagingError::UnknownPartition(partition.to_owned()))?;
        Ok(root.join("sync.").join(&self.id))
    }

    /// The staged file for (partition, GUID), if any.
    pub fn get(&self, partition: &str, guid: &Guid) -> Option<PathBuf> {
        let path = self.staged_path(partition, guid)?;
        // An upload being written under its final name is not staged until it hashed
        // right (never the case between lines, where lookups happen; but cheap to be
        // sure of).
        if self.upload.as_ref().is_some_and(|up| up.path == path) {
            return None;
        }
        fs::symlink_metadata(&path)
            .is_ok_and(|m| m.is_file())
            .then_some(path)
    }

    /// Where (partition, GUID) is staged, for a caller that has already seen it
    /// there with [`get`](Self::get) within the same command: no `stat` again.
    /// `None` only when nothing was staged on that partition.
    pub fn staged_path(&self, partition: &str, guid: &Guid) -> Option<PathBuf> {
        if !self.dirs.contains(partition) {
            return None;
        }
        Some(self.dir(partition).ok()?.join(guid.to_hex()))
    }

    /// Whether an upload of this GUID arrived with bytes that hash to something else.
    pub fn was_corrupt(&self, guid: &Guid) -> Option<Guid> {
        self.corrupt
            .iter()
            .find(|(expected, _)| expected == guid)
            .map(|(_, computed)| *computed)
    }

    /// A new, empty, already unlinked file in the partition's staging directory, for
    /// the records of a streamed `APPLY MAILBOX` ([`crate::spool`]): on the same disk
    /// as the messages, private to this connection, and gone with it whatever happens.
    pub fn spool_file(&mut self, partition: &str) -> Result<File, StagingError> {
        let dir = self.ensure_dir(partition)?;
        let path = dir.join(format!(
            "records.{}",
            NEXT_STAGING_ID.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |source| StagingError::Spool {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        fs::remove_file(&path).map_err(io)?;
        Ok(file)
    }

    /// Stages an existing file (found by `APPLY RESERVE`, already hash-checked) by
    /// hard-linking it, so a later delete of its mailbox cannot take it away.
    pub fn stage_existing(
        &mut self,
        partition: &str,
        guid: Guid,
        source: &Path,
    ) -> Result<(), StagingError> {
        if self.get(partition, &guid).is_some() {
            return Ok(());
        }
        let dir = self.ensure_dir(partition)?;
        let io = |path: &Path, source| StagingError::Io {
            guid: guid.to_hex(),
            path: path.to_owned(),
            source,
        };
        let path = dir.join(guid.to_hex());
        let _ = fs::remove_file(&path);
        if fs::hard_link(source, &path).is_err() {
            fs::copy(source, &path).map_err(|e| io(&path, e))?;
        }
        Ok(())
    }

    /// Drops everything staged (RESTART, EXIT, end of connection).
    pub fn clear(&mut self) {
        self.upload = None;
        self.buffer = Vec::new();
        self.corrupt.clear();
        self.dirs.clear();
        for root in self.config.partitions.values() {
            let _ = fs::remove_dir_all(root.join("sync.").join(&self.id));
        }
    }

    fn begin(&mut self, header: &FileHeader<'_>) -> Result<(), StagingError> {
        let partition = String::from_utf8_lossy(header.partition).into_owned();
        let guid = Guid::parse(header.guid).map_err(|_| {
            StagingError::BadGuid(String::from_utf8_lossy(header.guid).into_owned())
        })?;
        let dir = self.ensure_dir(&partition)?;
        let io = |path: &Path, source| StagingError::Io {
            guid: guid.to_hex(),
            path: path.to_owned(),
            source,
        };
        // Never truncate: the file may be linked into a mailbox already.
        let create = |path: &Path| OpenOptions::new().write(true).create_new(true).open(path);
        let path = dir.join(guid.to_hex());
        let (path, file) = match create(&path) {
            Ok(f) => (path, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Sent again while staged: checked under a temporary name, then
                // renamed over the staged one, which stays usable if these bytes turn
                // out corrupt.
                let tmp = dir.join(format!("{}.tmp", guid.to_hex()));
                let file = match create(&tmp) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        // Left by an upload that failed; nothing refers to it.
                        fs::remove_file(&tmp).map_err(|e| io(&tmp, e))?;
                        create(&tmp).map_err(|e| io(&tmp, e))?
                    }
                    Err(e) => return Err(io(&tmp, e)),
                };
                (tmp, file)
            }
            Err(e) => return Err(io(&path, e)),
        };
        self.buffer.clear();
        if self.buffer.capacity() < WRITE_BUFFER {
            self.buffer.reserve_exact(WRITE_BUFFER);
        }
        self.upload = Some(Upload {
            guid,
            path,
            file,
            hasher: Sha1::new(),
        });
        Ok(())
    }

    /// Writes the gathered bytes of the current upload, and `more` after them.
    fn write_out(&mut self, more: &[u8]) -> Result<(), StagingError> {
        let Some(up) = &mut self.upload else {
            return Ok(());
        };
        let result = if self.buffer.is_empty() {
            up.file.write_all(more)
        } else {
            up.file
                .write_all(&self.buffer)
                .and_then(|()| up.file.write_all(more))
        };
        self.buffer.clear();
        result.map_err(|source| StagingError::Io {
            guid: up.guid.to_hex(),
            path: up.path.clone(),
            source,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StagingError> {
        let Some(up) = &mut self.upload else {
            return Ok(());
        };
        up.hasher.update(bytes);
        if self.buffer.len() + bytes.len() <= WRITE_BUFFER {
            self.buffer.extend_from_slice(bytes);
            Ok(())
        } else {
            self.write_out(bytes)
        }
    }

    fn end(&mut self) -> Result<(), StagingError> {
        let written = self.write_out(&[]);
        let Some(up) = self.upload.take() else {
            return Ok(());
        };
        if let Err(e) = written {
            drop(up.file);
            let _ = fs::remove_file(&up.path);
            return Err(e);
        }
        writeback::start(up.file);
        let computed = Guid(up.hasher.finalize().into());
        if computed != up.guid {
            let _ = fs::remove_file(&up.path);
            self.corrupt.push((up.guid, computed));
            // Not an error for the line: Cyrus checks at append time, and so do we,
            // answering the APPLY MAILBOX that needs this file.
            return Ok(());
        }
        if up.path.extension().is_some_and(|e| e == "tmp") {
            let staged = up.path.with_extension("");
            fs::rename(&up.path, &staged).map_err(|source| StagingError::Io {
                guid: up.guid.to_hex(),
                path: staged.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Early writeback of staged files. The commit that links a staged file into a
/// mailbox fsyncs it, and an fsync that first has to write the data out waits for the
/// device much longer; so as soon as a file is complete its writeback is started
/// (`posix_fadvise(POSIX_FADV_DONTNEED)`, which on Linux starts writing dirty pages
/// without waiting: no cache flush, durability still comes only from the commit's
/// fsync, and the replica never reads the file back during a sync). Submitting the
/// I/O costs CPU, so a thread of its own does it, and closes the file, while the
/// connection goes on reading.
mod writeback {
    use std::fs::File;
    use std::sync::OnceLock;
    use std::sync::mpsc::{self, SyncSender, TrySendError};

    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};

    /// Files waiting for the thread; beyond that they are just closed (a hint lost,
    /// nothing else).
    const QUEUE: usize = 4096;

    static QUEUE_TX: OnceLock<Option<SyncSender<File>>> = OnceLock::new();

    fn queue() -> Option<&'static SyncSender<File>> {
        QUEUE_TX
            .get_or_init(|| {
                let (tx, rx) = mpsc::sync_channel::<File>(QUEUE);
                std::thread::Builder::new()
                    .name("writeback".into())
                    .spawn(move || {
                        for file in rx {
                            // A hint: an error here changes nothing, and the commit's
                            // fsync reports any real one.
                            let _ =
                                posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
                        }
                    })
                    .ok()
                    .map(|_| tx)
            })
            .as_ref()
    }

    /// Starts writing `file` back and closes it.
    pub fn start(file: File) {
        match queue() {
            Some(tx) => match tx.try_send(file) {
                Ok(()) => {}
                Err(TrySendError::Full(file) | TrySendError::Disconnected(file)) => drop(file),
            },
            None => drop(file),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        self.clear();
    }
}

impl FileSink for Staging {
    fn begin_file(&mut self, header: &FileHeader<'_>) -> Result<(), SinkError> {
        self.begin(header).map_err(|e| SinkError(Box::new(e)))
    }

    fn file_bytes(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.write(bytes).map_err(|e| {
            if let Some(up) = self.upload.take() {
                let _ = fs::remove_file(&up.path);
            }
            SinkError(Box::new(e))
        })
    }

    fn end_file(&mut self) -> Result<(), SinkError> {
        self.end().map_err(|e| SinkError(Box::new(e)))
    }

    fn buffers(&self, len: usize) -> bool {
        self.upload.is_some() && self.buffer.len() + len <= WRITE_BUFFER
    }
}
