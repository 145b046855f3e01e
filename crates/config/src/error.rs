//! Everything that can be wrong with an imapd.conf, each with the file and line it
//! came from so an administrator can go straight to it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where a setting (or a mistake) is: the file and its 1-based line. For a value
/// continued over several lines with `\`, the line the value starts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// The kind of value a typed getter expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Switch,
    Integer,
    Duration,
    ChannelList,
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueKind::Switch => "switch (yes/no, on/off, true/false, 1/0)",
            ValueKind::Integer => "integer",
            ValueKind::Duration => "duration (e.g. 30, 20m, 1h30m)",
            ValueKind::ChannelList => "channel list",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The main configuration file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },

    /// A file named by `@include` could not be read.
    #[error("{origin}: cannot read included file {}: {source}", path.display())]
    Include {
        origin: Origin,
        path: PathBuf,
        source: io::Error,
    },

    /// `@include` of a file that is already being read (directly or further up).
    #[error("{origin}: include loop: {} includes itself", path.display())]
    IncludeLoop { origin: Origin, path: PathBuf },

    /// `@include` of a file that was read before; Cyrus refuses this too.
    #[error("{origin}: configuration file {} included twice", path.display())]
    IncludedTwice { origin: Origin, path: PathBuf },

    /// The key is not `[@]` followed by letters, digits, `-` and `_`, directly
    /// followed by `:`.
    #[error("{origin}: invalid option name")]
    InvalidKey { origin: Origin },

    /// A `@` directive other than `@include`.
    #[error("{origin}: invalid directive {directive}")]
    InvalidDirective { origin: Origin, directive: String },

    /// `key:` with nothing after it; Cyrus refuses to start with such a line.
    #[error("{origin}: empty value for {key}")]
    EmptyValue { origin: Origin, key: String },

    /// The value is not UTF-8.
    #[error("{origin}: value of {key} is not valid UTF-8")]
    NotUtf8 { origin: Origin, key: String },

    /// The same key twice (keys compare case-insensitively). Cyrus 3.6 treats this
    /// as a fatal configuration error rather than letting one of them win.
    #[error("{origin}: option {key} was already set at {first}")]
    DuplicateKey {
        origin: Origin,
        key: String,
        first: Origin,
    },

    /// A typed getter found a value it cannot interpret.
    #[error("{origin}: invalid value '{value}' for {key}: expected a {expected}")]
    InvalidValue {
        origin: Origin,
        key: String,
        value: String,
        expected: ValueKind,
    },

    /// A setting the caller cannot do without is absent.
    #[error("{key} is not set in {}", file.display())]
    Missing { key: String, file: PathBuf },
}
