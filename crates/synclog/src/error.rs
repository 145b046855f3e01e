//! What can go wrong writing or reading a sync_log.

use std::fmt;
use std::io;
use std::path::PathBuf;

use csync_config::{Channel, ConfigError};

use crate::record::RecordError;

#[derive(Debug, thiserror::Error)]
pub enum SyncLogError {
    /// The configuration does not say where or how to log.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A record cannot be written (line break or NUL in an argument); nothing of
    /// the group was written.
    #[error(transparent)]
    Record(#[from] RecordError),

    /// A system call on a log file or directory failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    /// The log file was replaced (rotated by a reader) every time it was locked;
    /// Cyrus gives up after the same number of tries.
    #[error("{}: replaced {attempts} times while waiting for its lock (for over 30 s); record not written", path.display())]
    KeptRotating { path: PathBuf, attempts: u32 },

    /// An append reached some channels but not these; the other channels have the
    /// records.
    #[error("sync_log append failed: {}", ChannelFailures(.0))]
    Channels(Vec<ChannelFailure>),
}

/// One channel an append could not write to.
#[derive(Debug)]
pub struct ChannelFailure {
    pub channel: Channel,
    pub error: Box<SyncLogError>,
}

struct ChannelFailures<'a>(&'a [ChannelFailure]);

impl fmt::Display for ChannelFailures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "channel {}: {}", failure.channel, failure.error)?;
        }
        Ok(())
    }
}

impl SyncLogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| SyncLogError::Io { op, path, source }
    }
}
