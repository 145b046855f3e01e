//! csync-config: reads imapd.conf the way Cyrus IMAPd 3.6 does, so every csync
//! binary can share a configuration file with a real Cyrus installation and read
//! the same settings from it.
//!
//! [`Config::from_file`] parses the file and its `@include`s (`key: value`, `#`
//! comments, `\` continuations; keys are case-insensitive; a key set twice is an
//! error, as in Cyrus).
//! Values are kept as text with the file and line they came from, and read through
//! typed getters that apply Cyrus's rules ([`value`]) and report a bad value with its
//! location. [`Lookup`] adds Cyrus's prefixed lookups: `<service>_<key>` and
//! `<channel>_<key>` (e.g. `repl1_sync_host`) falling back to `<key>`.
//!
//! Unlike Cyrus, this crate knows no option table: nothing is validated until it is
//! asked for, and defaults belong to the caller. Section numbers (§) refer to
//! `csync-protocol.md`.
#![forbid(unsafe_code)]

mod error;
mod parse;
pub mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};

pub use error::{ConfigError, Origin, ValueKind};
pub use value::DurationUnit;

use parse::{Entry, Reader};

/// Where Cyrus and csync look for imapd.conf when no `-C` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/imapd.conf";

/// A parsed imapd.conf (with everything it includes).
#[derive(Clone, Debug)]
pub struct Config {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
}

impl Config {
    /// Reads and parses `path` and the files it includes.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let mut reader = Reader::new();
        reader.read_main(path)?;
        Ok(Config {
            path: path.to_path_buf(),
            entries: reader.entries,
        })
    }

    /// Parses `text` as if it were the contents of `path` (which need not exist):
    /// errors name `path`, and relative `@include`s are resolved against its
    /// directory.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let mut reader = Reader::new();
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        reader.read_text(path, canonical, text.as_bytes())?;
        Ok(Config {
            path: path.to_path_buf(),
            entries: reader.entries,
        })
    }

    /// The main file this configuration was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every setting as (lower-case key, value), in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|(k, e)| (k.as_str(), e.value.as_str()))
    }

    /// Plain lookups (no prefix); the base for [`Lookup::service`] and
    /// [`Lookup::channel`].
    pub fn lookup(&self) -> Lookup<'_> {
        Lookup {
            config: self,
            service: None,
            channel: None,
        }
    }

    /// Lookups that prefer `<service>_<key>` (Cyrus's per-service overrides, e.g.
    /// `lmtp_sync_log` for the service `lmtp`).
    pub fn service<'a>(&'a self, service: &'a str) -> Lookup<'a> {
        self.lookup().service(service)
    }

    /// Lookups that prefer `<channel>_<key>` (e.g. `repl1_sync_host`); `None` (the
    /// default channel) means plain lookups.
    pub fn channel<'a>(&'a self, channel: impl Into<Option<&'a str>>) -> Lookup<'a> {
        self.lookup().channel(channel)
    }

    /// The raw value of `key`, if set.
    pub fn string(&self, key: &str) -> Option<&str> {
        self.lookup().string(key)
    }

    /// Where `key` was set.
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.lookup().origin(key)
    }

    /// `key` read as a switch ([`value::parse_switch`]).
    pub fn switch(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.lookup().switch(key)
    }

    /// `key` read as a switch, `default` if unset.
    pub fn switch_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        Ok(self.switch(key)?.unwrap_or(default))
    }

    /// `key` read as an integer ([`value::parse_int`]).
    pub fn int(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        self.lookup().int(key)
    }

    /// `key` read as a duration in seconds ([`value::parse_duration`]), a bare
    /// number counting in `default_unit`.
    pub fn duration(
        &self,
        key: &str,
        default_unit: DurationUnit,
    ) -> Result<Option<i64>, ConfigError> {
        self.lookup().duration(key, default_unit)
    }

    /// The value of `key`, or [`ConfigError::Missing`].
    pub fn require(&self, key: &str) -> Result<&str, ConfigError> {
        self.string(key).ok_or_else(|| ConfigError::Missing {
            key: key.to_ascii_lowercase(),
            file: self.path.clone(),
        })
    }

    /// `configdirectory`, which every Cyrus program requires.
    pub fn config_directory(&self) -> Result<&Path, ConfigError> {
        self.require("configdirectory").map(Path::new)
    }

    /// Every `partition-<name>` setting as name → directory (names are lower case,
    /// like all keys).
    pub fn partitions(&self) -> BTreeMap<&str, &Path> {
        self.entries
            .range::<str, _>((Bound::Included("partition-"), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with("partition-"))
            .filter_map(|(k, e)| {
                let name = &k["partition-".len()..];
                (!name.is_empty()).then(|| (name, Path::new(e.value.as_str())))
            })
            .collect()
    }

    /// The directory of partition `name` (`partition-<name>`).
    pub fn partition(&self, name: &str) -> Option<&Path> {
        self.string(&format!("partition-{name}")).map(Path::new)
    }

    /// `defaultpartition`, folded to lower case as Cyrus does.
    pub fn default_partition(&self) -> Option<String> {
        self.string("defaultpartition")
            .map(|p| p.to_ascii_lowercase())
    }

    /// `key` read as a channel list, as Cyrus splits `sync_log_channels`: names
    /// separated by spaces; the token `""` is the default channel. Repeated
    /// channels are listed once.
    pub fn channel_list(&self, key: &str) -> Result<Option<Vec<Channel>>, ConfigError> {
        let Some((_, entry)) = self.lookup().entry(key) else {
            return Ok(None);
        };
        let mut channels = Vec::new();
        for token in entry.value.split(' ').filter(|t| !t.is_empty()) {
            let channel = if token == "\"\"" {
                Channel::Default
            } else {
                Channel::named(token).map_err(|_| ConfigError::InvalidValue {
                    origin: entry.origin.clone(),
                    key: key.to_ascii_lowercase(),
                    value: token.to_owned(),
                    expected: ValueKind::ChannelList,
                })?
            };
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        Ok(Some(channels))
    }

    /// The channels sync_log records go to (§6.1): `sync_log_channels`, or only the
    /// default channel when it is unset.
    pub fn sync_log_channels(&self) -> Result<Vec<Channel>, ConfigError> {
        Ok(self
            .channel_list("sync_log_channels")?
            .unwrap_or_else(|| vec![Channel::Default]))
    }
}

/// A sync_log channel (§6.1): the default one (`<configdirectory>/sync/log`) or a
/// named one (`<configdirectory>/sync/<name>/log`, settings `<name>_sync_*`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    Default,
    Named(String),
}

/// A channel name that cannot be used: it would not stay inside the sync
/// directory or could not be written in `sync_log_channels`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid channel name {0:?}: must be non-empty, not . or .., without /, blanks or control characters"
)]
pub struct InvalidChannelName(pub String);

impl Channel {
    /// A named channel. Cyrus does not check names; csync refuses the ones that
    /// would put the log outside `<configdirectory>/sync/` or cannot be listed in
    /// `sync_log_channels`.
    pub fn named(name: &str) -> Result<Channel, InvalidChannelName> {
        let bad = name.is_empty()
            || name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control());
        if bad {
            return Err(InvalidChannelName(name.to_owned()));
        }
        Ok(Channel::Named(name.to_owned()))
    }

    /// The name, `None` for the default channel.
    pub fn name(&self) -> Option<&str> {
        match self {
            Channel::Default => None,
            Channel::Named(name) => Some(name),
        }
    }
}

impl fmt::Display for Channel {
    /// The channel as written in `sync_log_channels`: `""` for the default one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name().unwrap_or("\"\""))
    }
}

/// Prefixed lookups. A key is looked up as, in order:
/// `<service>_<channel>_<key>`, `<channel>_<key>`, `<service>_<key>`, `<key>`
/// (each only when that prefix is set), the order Cyrus's `sync_get_config` and
/// `config_getoverflowstring` give. Prefixes compare case-insensitively like keys
/// (Cyrus lower-cases the file's keys but not the channel name it looks up, so a
/// channel `Repl1` never matches there).
///
/// A prefixed value is read with the same rules as the plain one. Cyrus 3.6 does
/// not quite: it reads `<channel>_sync_try_imap` with `atoi` (so `yes` counts as
/// off there; csync reads it as on) and silently falls back to the plain key when
/// `<channel>_sync_repeat_interval` does not parse (csync reports the error).
#[derive(Clone, Copy, Debug)]
pub struct Lookup<'a> {
    config: &'a Config,
    service: Option<&'a str>,
    channel: Option<&'a str>,
}

impl<'a> Lookup<'a> {
    /// Prefer `<service>_<key>`.
    pub fn service(self, service: &'a str) -> Lookup<'a> {
        Lookup {
            service: Some(service),
            ..self
        }
    }

    /// Prefer `<channel>_<key>`; `None` removes the channel prefix.
    pub fn channel(self, channel: impl Into<Option<&'a str>>) -> Lookup<'a> {
        Lookup {
            channel: channel.into(),
            ..self
        }
    }

    fn candidates(&self, key: &str) -> Vec<String> {
        let key = key.to_ascii_lowercase();
        let service = self.service.map(str::to_ascii_lowercase);
        let channel = self.channel.map(str::to_ascii_lowercase);
        let mut out = Vec::with_capacity(4);
        if let (Some(s), Some(c)) = (&service, &channel) {
            out.push(format!("{s}_{c}_{key}"));
        }
        if let Some(c) = &channel {
            out.push(format!("{c}_{key}"));
        }
        if let Some(s) = &service {
            out.push(format!("{s}_{key}"));
        }
        out.push(key);
        out
    }

    fn entry(&self, key: &str) -> Option<(String, &'a Entry)> {
        self.candidates(key)
            .into_iter()
            .find_map(|k| self.config.entries.get(&k).map(|e| (k, e)))
    }

    /// The key that would answer for `key` (e.g. `repl1_sync_host`), if any is set.
    pub fn resolved_key(&self, key: &str) -> Option<String> {
        self.entry(key).map(|(k, _)| k)
    }

    /// The raw value.
    pub fn string(&self, key: &str) -> Option<&'a str> {
        self.entry(key).map(|(_, e)| e.value.as_str())
    }

    /// Where the value that answers for `key` was set.
    pub fn origin(&self, key: &str) -> Option<&'a Origin> {
        self.entry(key).map(|(_, e)| &e.origin)
    }

    fn typed<T>(
        &self,
        key: &str,
        expected: ValueKind,
        read: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((found, entry)) = self.entry(key) else {
            return Ok(None);
        };
        match read(&entry.value) {
            Some(v) => Ok(Some(v)),
            None => Err(ConfigError::InvalidValue {
                origin: entry.origin.clone(),
                key: found,
                value: entry.value.clone(),
                expected,
            }),
        }
    }

    /// The value as a switch ([`value::parse_switch`]).
    pub fn switch(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.typed(key, ValueKind::Switch, value::parse_switch)
    }

    /// The value as an integer ([`value::parse_int`]).
    pub fn int(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        self.typed(key, ValueKind::Integer, value::parse_int)
    }

    /// The value as a duration in seconds ([`value::parse_duration`]).
    pub fn duration(
        &self,
        key: &str,
        default_unit: DurationUnit,
    ) -> Result<Option<i64>, ConfigError> {
        self.typed(key, ValueKind::Duration, |v| {
            value::parse_duration(v, default_unit)
        })
    }
}

#[cfg(test)]
mod tests;
