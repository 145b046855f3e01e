//! What the store takes from imapd.conf (`configdirectory`, `partition-<name>`,
//! `defaultpartition`, `unixhierarchysep`, `virtdomains`, `defaultdomain`,
//! `hashimapspool`, `delete_mode`, `expunge_mode`, `deletedprefix`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::names::{Namespace, validate_partition};
use crate::{Result, StoreError};

/// `delete_mode`: delayed deletes rename to `DELETED.*` (Cyrus's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteMode {
    Delayed,
    Immediate,
}

/// `expunge_mode`: delayed expunges keep the file and the record (`\Expunged`) until
/// an expire run; immediate ones remove the file at once (the record stays, as the
/// replica needs it to learn about the expunge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpungeMode {
    Delayed,
    Immediate,
}

/// The store's configuration.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub configdirectory: PathBuf,
    /// Partition name → root directory.
    pub partitions: BTreeMap<String, PathBuf>,
    pub default_partition: String,
    pub namespace: Namespace,
    /// Recorded for compatibility; csync always uses Cyrus 3.6's uuid layout.
    pub hashimapspool: bool,
    pub delete_mode: DeleteMode,
    pub expunge_mode: ExpungeMode,
}

impl StoreConfig {
    /// A store under one directory: `<root>/conf` and partition `default` at
    /// `<root>/spool` (tests, the quickstart).
    pub fn single_dir(root: &Path) -> StoreConfig {
        let mut partitions = BTreeMap::new();
        partitions.insert("default".to_owned(), root.join("spool"));
        StoreConfig {
            configdirectory: root.join("conf"),
            partitions,
            default_partition: "default".into(),
            namespace: Namespace::default(),
            hashimapspool: false,
            delete_mode: DeleteMode::Delayed,
            expunge_mode: ExpungeMode::Delayed,
        }
    }

    /// The root of a configured partition.
    pub fn partition_root(&self, partition: &str) -> Result<&Path> {
        validate_partition(partition)?;
        self.partitions
            .get(partition)
            .map(PathBuf::as_path)
            .ok_or_else(|| StoreError::UnknownPartition(partition.to_owned()))
    }

    pub fn index_path(&self) -> PathBuf {
        self.configdirectory.join("csync.db")
    }
}
