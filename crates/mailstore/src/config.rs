//! What the store takes from imapd.conf (`configdirectory`, `partition-<name>`,
//! `defaultpartition`, `unixhierarchysep`, `virtdomains`, `defaultdomain`,
//! `hashimapspool`, `delete_mode`, `expunge_mode`, `deletedprefix`), read from a
//! parsed imapd.conf by [`StoreConfig::from_imapd`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use csync_config::{Config, ConfigError, Origin};

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

    /// The store's settings from a parsed imapd.conf, with Cyrus 3.6's defaults for
    /// what is unset. Everything is checked here, so a bad setting is reported with
    /// its file and line before the store is touched.
    pub fn from_imapd(conf: &Config) -> std::result::Result<StoreConfig, ImapdError> {
        let configdirectory = conf.config_directory()?.to_path_buf();
        let mut partitions = BTreeMap::new();
        for (name, root) in conf.partitions() {
            let key = format!("partition-{name}");
            // A partition name becomes part of paths and wire literals: refuse
            // anything that is not a plain token, as the store would later.
            validate_partition(name).map_err(|_| {
                ImapdError::invalid(
                    conf,
                    &key,
                    name,
                    "a partition name of [a-z0-9._-] not starting with a dot",
                )
            })?;
            partitions.insert(name.to_owned(), root.to_path_buf());
        }
        let default_partition = conf
            .default_partition()
            .unwrap_or_else(|| "default".to_owned());
        if !partitions.contains_key(&default_partition) {
            return Err(ImapdError::NoDefaultPartition {
                partition: default_partition,
                file: conf.path().to_path_buf(),
                configured: partitions.keys().cloned().collect(),
            });
        }
        let deletedprefix = conf.string("deletedprefix").unwrap_or("DELETED").to_owned();
        // The prefix is the first component of every DELETED name, so it must be a
        // valid component itself.
        if deletedprefix.contains(['.', '!', '/'])
            || crate::names::validate_internal(&deletedprefix).is_err()
        {
            return Err(ImapdError::invalid(
                conf,
                "deletedprefix",
                &deletedprefix,
                "one mailbox name component (no '.', '!' or '/')",
            ));
        }
        let defaultdomain = conf
            .string("defaultdomain")
            .map(str::to_ascii_lowercase)
            .filter(|d| !d.is_empty());
        let virtdomains = match conf.string("virtdomains") {
            None => false,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "off" => false,
                "userid" | "on" => true,
                // virtdomains was a switch before it became an enum; old files
                // still say yes/no.
                _ => csync_config::value::parse_switch(v).ok_or_else(|| {
                    ImapdError::invalid(conf, "virtdomains", v, "off, userid or on")
                })?,
            },
        };
        let delete_mode = match conf.string("delete_mode") {
            None => DeleteMode::Delayed,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "delayed" => DeleteMode::Delayed,
                "immediate" => DeleteMode::Immediate,
                _ => {
                    return Err(ImapdError::invalid(
                        conf,
                        "delete_mode",
                        v,
                        "delayed or immediate",
                    ));
                }
            },
        };
        let expunge_mode = match conf.string("expunge_mode") {
            None => ExpungeMode::Delayed,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                // Cyrus 2.x's "default" and "semidelayed" keep the message until
                // a later cleanup, like "delayed": the file is kept here too.
                "delayed" | "semidelayed" | "default" => ExpungeMode::Delayed,
                "immediate" => ExpungeMode::Immediate,
                _ => {
                    return Err(ImapdError::invalid(
                        conf,
                        "expunge_mode",
                        v,
                        "delayed, semidelayed, default or immediate",
                    ));
                }
            },
        };
        Ok(StoreConfig {
            configdirectory,
            partitions,
            default_partition,
            namespace: Namespace {
                unixhierarchysep: conf.switch_or("unixhierarchysep", false)?,
                virtdomains,
                defaultdomain,
                deletedprefix,
            },
            hashimapspool: conf.switch_or("hashimapspool", false)?,
            delete_mode,
            expunge_mode,
        })
    }
}

/// An imapd.conf the store cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum ImapdError {
    /// Unreadable or unparsable file, a missing `configdirectory`, a bad switch.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A value the store does not understand.
    #[error("{}invalid value '{value}' for {key}: expected {expected}", origin.as_ref().map(|o| format!("{o}: ")).unwrap_or_default())]
    InvalidValue {
        origin: Option<Origin>,
        key: String,
        value: String,
        expected: &'static str,
    },
    /// `defaultpartition` (or `default`, when it is unset) has no `partition-` line.
    #[error(
        "default partition {partition:?} has no partition-{partition} in {} (configured: {})",
        file.display(),
        if configured.is_empty() { "none".to_owned() } else { configured.join(", ") }
    )]
    NoDefaultPartition {
        partition: String,
        file: PathBuf,
        configured: Vec<String>,
    },
}

impl ImapdError {
    fn invalid(conf: &Config, key: &str, value: &str, expected: &'static str) -> ImapdError {
        ImapdError::InvalidValue {
            origin: conf.origin(key).cloned(),
            key: key.to_owned(),
            value: value.to_owned(),
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(text: &str) -> std::result::Result<StoreConfig, ImapdError> {
        StoreConfig::from_imapd(&Config::parse(text, "/etc/imapd.conf").expect("parses"))
    }

    #[test]
    fn defaults_follow_cyrus() {
        let c = from("configdirectory: /var/lib/cyrus\npartition-default: /var/spool/cyrus/mail\n")
            .unwrap();
        assert_eq!(c.configdirectory, PathBuf::from("/var/lib/cyrus"));
        assert_eq!(c.default_partition, "default");
        assert_eq!(
            c.partitions.get("default").map(PathBuf::as_path),
            Some(Path::new("/var/spool/cyrus/mail"))
        );
        assert_eq!(c.namespace, Namespace::default());
        assert!(!c.hashimapspool);
        assert_eq!(c.delete_mode, DeleteMode::Delayed);
        assert_eq!(c.expunge_mode, ExpungeMode::Delayed);
        assert_eq!(c.index_path(), PathBuf::from("/var/lib/cyrus/csync.db"));
    }

    #[test]
    fn every_key_is_read() {
        let c = from(
            "configdirectory: /c\n\
             partition-default: /p/default\n\
             partition-Fast: /p/fast\n\
             defaultpartition: FAST\n\
             unixhierarchysep: yes\n\
             virtdomains: userid\n\
             defaultdomain: Example.COM\n\
             hashimapspool: on\n\
             delete_mode: immediate\n\
             expunge_mode: immediate\n\
             deletedprefix: Trash-Bin\n",
        )
        .unwrap();
        // Keys (and so partition names) and defaultpartition are folded to lower case.
        assert_eq!(c.default_partition, "fast");
        assert_eq!(c.partitions.keys().collect::<Vec<_>>(), ["default", "fast"]);
        assert_eq!(
            c.namespace,
            Namespace {
                unixhierarchysep: true,
                virtdomains: true,
                defaultdomain: Some("example.com".into()),
                deletedprefix: "Trash-Bin".into(),
            }
        );
        assert!(c.hashimapspool);
        assert_eq!(c.delete_mode, DeleteMode::Immediate);
        assert_eq!(c.expunge_mode, ExpungeMode::Immediate);
        assert_eq!(
            c.namespace.deleted_name("user.john", 0x10),
            "Trash-Bin.user.john.10"
        );
    }

    #[test]
    fn legacy_spellings() {
        let base = "configdirectory: /c\npartition-default: /p\n";
        for (v, on) in [("on", true), ("off", false), ("yes", true), ("no", false)] {
            let c = from(&format!("{base}virtdomains: {v}\n")).unwrap();
            assert_eq!(c.namespace.virtdomains, on, "{v}");
        }
        for v in ["delayed", "semidelayed", "default"] {
            let c = from(&format!("{base}expunge_mode: {v}\n")).unwrap();
            assert_eq!(c.expunge_mode, ExpungeMode::Delayed, "{v}");
        }
    }

    #[test]
    fn bad_settings_name_their_line() {
        let err =
            from("configdirectory: /c\npartition-default: /p\ndelete_mode: later\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/imapd.conf:3: invalid value 'later' for delete_mode: expected delayed or immediate"
        );
        let err =
            from("configdirectory: /c\npartition-default: /p\nvirtdomains: maybe\n").unwrap_err();
        assert!(
            matches!(err, ImapdError::InvalidValue { ref key, .. } if key == "virtdomains"),
            "{err}"
        );
        let err = from("configdirectory: /c\npartition-default: /p\nunixhierarchysep: Yes\n")
            .unwrap_err();
        assert!(
            matches!(err, ImapdError::Config(ConfigError::InvalidValue { .. })),
            "{err}"
        );
        for prefix in ["A.B", "x!y", "a/b"] {
            let err = from(&format!(
                "configdirectory: /c\npartition-default: /p\ndeletedprefix: {prefix}\n"
            ))
            .unwrap_err();
            assert!(
                matches!(err, ImapdError::InvalidValue { ref key, .. } if key == "deletedprefix"),
                "{err}"
            );
        }
        // The parser only lets [A-Za-z0-9_-] through in keys, but the store also
        // caps the length of a partition name.
        let long = "p".repeat(65);
        let err = from(&format!(
            "configdirectory: /c\npartition-default: /p\npartition-{long}: /q\n"
        ))
        .unwrap_err();
        assert!(
            matches!(err, ImapdError::InvalidValue { ref key, .. } if key.starts_with("partition-p")),
            "{err}"
        );
    }

    #[test]
    fn missing_essentials_are_reported() {
        let err = from("partition-default: /p\n").unwrap_err();
        assert!(
            matches!(err, ImapdError::Config(ConfigError::Missing { ref key, .. }) if key == "configdirectory"),
            "{err}"
        );
        let err = from("configdirectory: /c\npartition-main: /p\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "default partition \"default\" has no partition-default in /etc/imapd.conf (configured: main)"
        );
        let err = from("configdirectory: /c\ndefaultpartition: main\n").unwrap_err();
        assert!(err.to_string().ends_with("(configured: none)"), "{err}");
    }
}
