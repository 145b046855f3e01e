//! Turning an error into one line for the administrator and a sysexits status, so
//! scripts can tell "no such mailbox" from "the store is busy, try again".
//!
//! Commands attach what they were doing with [`doing`] (anyhow context); the root
//! cause is a [`StoreError`], an imapd.conf error, an I/O error or a [`Coded`] error
//! raised by the command itself. The report is
//! `csyncadm: <what failed> (<mailbox/user>): <cause>`, followed by a hint line when
//! there is an obvious fix.

use std::fmt;
use std::io::{self, Write};

use csync_config::ConfigError;
use csync_mailstore::{ImapdError, StoreConfig, StoreError};

/// Exit statuses from sysexits.h.
pub mod status {
    /// verify found problems.
    pub const PROBLEMS: u8 = 1;
    pub const USAGE: u8 = 64;
    pub const DATAERR: u8 = 65;
    pub const NOINPUT: u8 = 66;
    pub const NOUSER: u8 = 67;
    pub const UNAVAILABLE: u8 = 69;
    pub const SOFTWARE: u8 = 70;
    pub const CANTCREAT: u8 = 73;
    pub const IOERR: u8 = 74;
    pub const TEMPFAIL: u8 = 75;
    pub const NOPERM: u8 = 77;
    pub const CONFIG: u8 = 78;
}

/// What a command was doing when it failed: `cannot deliver (user.john)`.
#[derive(Debug)]
pub struct Doing {
    what: String,
    subject: Option<String>,
}

impl fmt::Display for Doing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Some(s) => write!(f, "{} ({s})", self.what),
            None => f.write_str(&self.what),
        }
    }
}

/// Context for an error: what failed, and on which mailbox or user (as the
/// administrator wrote it).
pub fn doing(what: &str, subject: &str) -> Doing {
    Doing {
        what: what.to_owned(),
        subject: Some(subject.to_owned()),
    }
}

/// Context without a mailbox or user.
pub fn doing_plain(what: &str) -> Doing {
    Doing {
        what: what.to_owned(),
        subject: None,
    }
}

/// An error a command raises itself, with its exit status and maybe a hint.
#[derive(Debug)]
pub struct Coded {
    pub code: u8,
    pub message: String,
    pub hint: Option<String>,
    /// The I/O error behind it, kept so a closed pipe can be recognised.
    pub source: Option<io::Error>,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl Coded {
    pub fn new(code: u8, message: impl Into<String>) -> Coded {
        Coded {
            code,
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Coded {
        self.hint = Some(hint.into());
        self
    }

    /// A malformed argument (uid set, flag change, quota limit).
    pub fn usage(message: impl Into<String>) -> Coded {
        Coded::new(status::USAGE, message)
    }

    /// Input the store or the command cannot accept.
    pub fn data(message: impl Into<String>) -> Coded {
        Coded::new(status::DATAERR, message)
    }

    /// Something named on the command line does not exist.
    pub fn no_input(message: impl Into<String>) -> Coded {
        Coded::new(status::NOINPUT, message)
    }
}

/// An input file that cannot be opened or read.
pub fn input_error(path: &std::path::Path, e: io::Error) -> Coded {
    let code = match e.kind() {
        io::ErrorKind::NotFound => status::NOINPUT,
        io::ErrorKind::PermissionDenied => status::NOPERM,
        _ => status::IOERR,
    };
    let mut coded = Coded::new(code, format!("cannot read {}: {e}", path.display()));
    coded.source = Some(e);
    coded
}

/// An output file or directory that cannot be created or written.
pub fn output_error(path: &std::path::Path, e: io::Error) -> Coded {
    let code = match e.kind() {
        io::ErrorKind::AlreadyExists => status::CANTCREAT,
        io::ErrorKind::PermissionDenied => status::NOPERM,
        _ if is_disk_full(&e) => status::TEMPFAIL,
        _ => status::IOERR,
    };
    let exists = e.kind() == io::ErrorKind::AlreadyExists;
    let mut coded = Coded::new(code, format!("cannot write {}: {e}", path.display()));
    coded.source = Some(e);
    if exists {
        coded.hint("csyncadm never overwrites an export; remove it or choose another name")
    } else {
        coded
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    // ENOSPC, EDQUOT
    matches!(e.raw_os_error(), Some(28 | 122))
}

/// Prints the error and returns the exit status. `config` (once it was read) lets
/// names be shown in the administrator's form and hints name configured partitions.
pub fn report(err: &anyhow::Error, config: Option<&StoreConfig>) -> u8 {
    // A closed stdout (`csyncadm show ... | head`) is not worth a message.
    if err.chain().any(|e| {
        e.downcast_ref::<io::Error>().map(io::Error::kind) == Some(io::ErrorKind::BrokenPipe)
    }) {
        return status::IOERR;
    }
    let mut parts: Vec<String> = Vec::new();
    let mut code = None;
    let mut hint = None;
    for cause in err.chain() {
        let text = if let Some(e) = cause.downcast_ref::<StoreError>() {
            if code.is_none() {
                code = Some(store_status(e));
                hint = store_hint(e, config);
            }
            describe_store_error(e, config)
        } else if let Some(e) = cause.downcast_ref::<Coded>() {
            if code.is_none() {
                code = Some(e.code);
                hint.clone_from(&e.hint);
            }
            e.to_string()
        } else if let Some(e) = cause.downcast_ref::<ImapdError>() {
            if code.is_none() {
                code = Some(status::CONFIG);
                hint = imapd_hint(e);
            }
            e.to_string()
        } else if let Some(e) = cause.downcast_ref::<ConfigError>() {
            if code.is_none() {
                code = Some(status::CONFIG);
                hint = config_hint(e);
            }
            e.to_string()
        } else if let Some(e) = cause.downcast_ref::<io::Error>() {
            if code.is_none() {
                code = Some(match e.kind() {
                    io::ErrorKind::NotFound => status::NOINPUT,
                    io::ErrorKind::PermissionDenied => status::NOPERM,
                    _ if is_disk_full(e) => status::TEMPFAIL,
                    _ => status::IOERR,
                });
            }
            e.to_string()
        } else {
            cause.to_string()
        };
        // Many errors repeat their source in their own message.
        if parts.last().is_some_and(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    // eprintln! would panic on a closed stderr; there is nowhere left to report to.
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "csyncadm: {}", parts.join(": "));
    if let Some(hint) = hint {
        let _ = writeln!(stderr, "csyncadm: hint: {hint}");
    }
    code.unwrap_or(status::SOFTWARE)
}

fn external(name: &str, config: Option<&StoreConfig>) -> String {
    match config {
        Some(c) => c.namespace.to_external(name),
        None => name.to_owned(),
    }
}

/// The store's message, with mailbox names in the administrator's form.
fn describe_store_error(e: &StoreError, config: Option<&StoreConfig>) -> String {
    match e {
        StoreError::NoSuchMailbox(name) => {
            format!("mailbox {} does not exist", external(name, config))
        }
        StoreError::MailboxExists(name) => {
            format!("mailbox {} already exists", external(name, config))
        }
        StoreError::NoSuchMessage { mailbox, uid } => {
            format!(
                "message uid {uid} not found in {}",
                external(mailbox, config)
            )
        }
        other => other.to_string(),
    }
}

fn store_status(e: &StoreError) -> u8 {
    match e {
        StoreError::BadName { .. } | StoreError::Invalid(_) | StoreError::GuidMismatch { .. } => {
            status::DATAERR
        }
        StoreError::NoSuchMailbox(_) | StoreError::NoSuchMessage { .. } => status::NOINPUT,
        StoreError::NoSuchUser(_) => status::NOUSER,
        StoreError::MailboxExists(_) => status::CANTCREAT,
        StoreError::UnknownPartition(_) => status::CONFIG,
        StoreError::Corrupt(_) => status::UNAVAILABLE,
        StoreError::Io { source, .. } => match source.kind() {
            io::ErrorKind::PermissionDenied => status::NOPERM,
            _ if is_disk_full(source) => status::TEMPFAIL,
            _ => status::IOERR,
        },
        StoreError::Sql(sql) => match sql.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                status::TEMPFAIL
            }
            Some(rusqlite::ErrorCode::DiskFull) => status::TEMPFAIL,
            Some(
                rusqlite::ErrorCode::PermissionDenied
                | rusqlite::ErrorCode::ReadOnly
                | rusqlite::ErrorCode::CannotOpen,
            ) => status::NOPERM,
            _ => status::UNAVAILABLE,
        },
        StoreError::SyncLog(_) => status::TEMPFAIL,
    }
}

fn store_hint(e: &StoreError, config: Option<&StoreConfig>) -> Option<String> {
    let owner_hint = "run csyncadm as the user that owns the store (usually cyrus)";
    match e {
        StoreError::NoSuchMailbox(_) => {
            Some("`csyncadm mailboxes` lists the mailboxes; `csyncadm create` makes one".to_owned())
        }
        StoreError::NoSuchUser(_) => Some("`csyncadm users` lists the users".to_owned()),
        StoreError::BadName { name, .. }
            if name.contains('/') && config.is_some_and(|c| !c.namespace.unixhierarchysep) =>
        {
            Some("this store separates levels with '.' (unixhierarchysep: no)".to_owned())
        }
        StoreError::UnknownPartition(p) => Some(format!(
            "add partition-{p} to imapd.conf{}",
            configured_partitions(config)
        )),
        StoreError::Corrupt(_) => Some(
            "the index (csync.db in configdirectory) needs restoring from a backup or a replica"
                .to_owned(),
        ),
        StoreError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
            Some(owner_hint.to_owned())
        }
        StoreError::Io { source, .. } if is_disk_full(source) => {
            Some("free space on the partition or the configdirectory and retry".to_owned())
        }
        StoreError::Sql(sql) => match sql.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Some("another process holds the store's write lock; try again".to_owned())
            }
            Some(
                rusqlite::ErrorCode::PermissionDenied
                | rusqlite::ErrorCode::ReadOnly
                | rusqlite::ErrorCode::CannotOpen,
            ) => Some(owner_hint.to_owned()),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                Some("the index (csync.db) needs restoring from a backup or a replica".to_owned())
            }
            _ => None,
        },
        StoreError::SyncLog(_) => Some(
            "the change itself is committed but its sync_log record is not; run \
             `sync_client -A` so the replica catches up"
                .to_owned(),
        ),
        _ => None,
    }
}

fn configured_partitions(config: Option<&StoreConfig>) -> String {
    match config {
        Some(c) if !c.partitions.is_empty() => format!(
            ", or use one of: {}",
            c.partitions.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        _ => String::new(),
    }
}

fn imapd_hint(e: &ImapdError) -> Option<String> {
    match e {
        ImapdError::Config(c) => config_hint(c),
        ImapdError::NoDefaultPartition { configured, .. } => configured
            .first()
            .map(|p| format!("set `defaultpartition: {p}` or add the missing partition- line")),
        ImapdError::InvalidValue { .. } => None,
    }
}

fn config_hint(e: &ConfigError) -> Option<String> {
    match e {
        ConfigError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            Some("give the configuration file with -C /path/to/imapd.conf".to_owned())
        }
        ConfigError::Missing { key, .. } if key == "configdirectory" => {
            Some("csync needs configdirectory, like every Cyrus program".to_owned())
        }
        _ => None,
    }
}
