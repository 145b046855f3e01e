//! The per-connection staging area ("reserve list", spec §3.6): message files uploaded
//! by `APPLY MESSAGE` or found by `APPLY RESERVE`, keyed by (partition, GUID), waiting
//! for an `APPLY MAILBOX` to take them.
//!
//! Uploads are streamed straight from the decoder to `<partition>/sync./<id>/` and
//! hashed on the way, so a file whose bytes do not match its GUID is never staged.
//! They are not fsynced here: an append hard-links the staged file into the mailbox
//! and the mailstore fsyncs it before its commit, which is the only point where
//! durability is promised. `RESTART`, `EXIT` and the end of the connection remove the
//! directory.

use std::collections::HashMap;
use std::fs::{self, File};
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
        matches!(self, StagingError::Io { source, .. } if source.raw_os_error() == Some(28))
    }
}

struct Upload {
    partition: String,
    guid: Guid,
    tmp: PathBuf,
    file: File,
    hasher: Sha1,
}

/// One connection's staging area.
pub struct Staging {
    config: StoreConfig,
    id: String,
    staged: HashMap<(String, Guid), PathBuf>,
    upload: Option<Upload>,
    /// GUIDs whose upload did not hash to the GUID (reported at append time).
    corrupt: Vec<(Guid, Guid)>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("id", &self.id)
            .field("staged", &self.staged.len())
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
            staged: HashMap::new(),
            upload: None,
            corrupt: Vec::new(),
        }
    }

    fn dir(&self, partition: &str) -> Result<PathBuf, StagingError> {
        let root = self
            .config
            .partition_root(partition)
            .map_err(|_| StagingError::UnknownPartition(partition.to_owned()))?;
        Ok(root.join("sync.").join(&self.id))
    }

    /// The staged file for (partition, GUID), if any.
    pub fn get(&self, partition: &str, guid: &Guid) -> Option<&Path> {
        self.staged
            .get(&(partition.to_owned(), *guid))
            .map(PathBuf::as_path)
    }

    /// Whether an upload of this GUID arrived with bytes that hash to something else.
    pub fn was_corrupt(&self, guid: &Guid) -> Option<Guid> {
        self.corrupt
            .iter()
            .find(|(expected, _)| expected == guid)
            .map(|(_, computed)| *computed)
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
        let dir = self.dir(partition)?;
        let io = |path: &Path, source| StagingError::Io {
            guid: guid.to_hex(),
            path: path.to_owned(),
            source,
        };
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let path = dir.join(guid.to_hex());
        let _ = fs::remove_file(&path);
        if fs::hard_link(source, &path).is_err() {
            fs::copy(source, &path).map_err(|e| io(&path, e))?;
        }
        self.staged.insert((partition.to_owned(), guid), path);
        Ok(())
    }

    /// Drops everything staged (RESTART, EXIT, end of connection).
    pub fn clear(&mut self) {
        self.upload = None;
        self.staged.clear();
        self.corrupt.clear();
        for root in self.config.partitions.values() {
            let _ = fs::remove_dir_all(root.join("sync.").join(&self.id));
        }
    }

    fn begin(&mut self, header: &FileHeader<'_>) -> Result<(), StagingError> {
        let partition = String::from_utf8_lossy(header.partition).into_owned();
        let guid = Guid::parse(header.guid).map_err(|_| {
            StagingError::BadGuid(String::from_utf8_lossy(header.guid).into_owned())
        })?;
        let dir = self.dir(&partition)?;
        let io = |path: &Path, source| StagingError::Io {
            guid: guid.to_hex(),
            path: path.to_owned(),
            source,
        };
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let tmp = dir.join(format!("{}.tmp", guid.to_hex()));
        let file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        self.upload = Some(Upload {
            partition,
            guid,
            tmp,
            file,
            hasher: Sha1::new(),
        });
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StagingError> {
        let Some(up) = &mut self.upload else {
            return Ok(());
        };
        up.hasher.update(bytes);
        up.file.write_all(bytes).map_err(|source| StagingError::Io {
            guid: up.guid.to_hex(),
            path: up.tmp.clone(),
            source,
        })
    }

    fn end(&mut self) -> Result<(), StagingError> {
        let Some(up) = self.upload.take() else {
            return Ok(());
        };
        drop(up.file);
        let computed = Guid(up.hasher.finalize().into());
        if computed != up.guid {
            let _ = fs::remove_file(&up.tmp);
            self.corrupt.push((up.guid, computed));
            // Not an error for the line: Cyrus checks at append time, and so do we,
            // answering the APPLY MAILBOX that needs this file.
            return Ok(());
        }
        let path = up.tmp.with_file_name(up.guid.to_hex());
        fs::rename(&up.tmp, &path).map_err(|source| StagingError::Io {
            guid: up.guid.to_hex(),
            path: path.clone(),
            source,
        })?;
        self.staged.insert((up.partition, up.guid), path);
        Ok(())
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
                let _ = fs::remove_file(&up.tmp);
            }
            SinkError(Box::new(e))
        })
    }

    fn end_file(&mut self) -> Result<(), SinkError> {
        self.end().map_err(|e| SinkError(Box::new(e)))
    }
}
