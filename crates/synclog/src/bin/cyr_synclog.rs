//! cyr_synclog: appends one record to the sync_log of every configured channel,
//! a drop-in for Cyrus 3.6's tool of that name (§6.6). See `man/cyr_synclog.8`.
//!
//! Differences from Cyrus 3.6, all deliberate:
//! * `-a` writes `APPEND <mailbox>` and `-c` writes `MAILBOX <mailbox>` (what they
//!   were written for; 3.6 writes the bare value as a broken line).
//! * A raw line is written exactly as given (3.6 treats it as a printf template
//!   and mangles `%`), and only if every line of it is a valid record.
//! * Usage errors exit 64 (EX_USAGE), not 255; more values than the type takes, or
//!   two type flags, are usage errors (3.6 ignores the extra values and lets the
//!   last flag win).
//! * `-n ""` is accepted and writes `ANNOTATION ""` (the server annotations).
//! * With `sync_log` off nothing is written (as in Cyrus), and a note says so.

use std::env;
use std::ffi::CString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{Args, CommandFactory, Parser};
use csync_config::{Config, DEFAULT_CONFIG_PATH};
use csync_synclog::{SyncLog, SyncLogRecord, parse_log};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{Group, User, getegid, geteuid, getgid, getuid, initgroups, setgid, setuid};

// sysexits.h
const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_NOUSER: u8 = 67;
const EX_OSERR: u8 = 71;
const EX_IOERR: u8 = 74;
const EX_CONFIG: u8 = 78;

#[derive(Parser, Debug)]
#[command(
    name = "cyr_synclog",
    about = "Append a record to the Cyrus replication log (sync_log) of every configured channel",
    override_usage = "cyr_synclog [-C FILE] -u|-U|-v|-m|-M|-a|-c|-q|-n VALUE\n       \
                      cyr_synclog [-C FILE] -s USER UNIQUEID\n       \
                      cyr_synclog [-C FILE] -b USER MAILBOX\n       \
                      cyr_synclog [-C FILE] \"RECORD LINE\"",
    after_help = "Nothing is written unless imapd.conf has `sync_log: on`. Mailbox names are \
                  internal names (user.john.Sent). See cyr_synclog(8)."
)]
struct Cli {
    /// imapd.conf to read
    #[arg(short = 'C', value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,

    #[command(flatten)]
    kind: Kind,

    /// The record's value(s), or a complete record line without a type flag
    #[arg(value_name = "VALUE")]
    values: Vec<String>,
}

#[derive(Args, Debug)]
#[group(multiple = false)]
struct Kind {
    /// Write USER: full sync of the user
    #[arg(short = 'u', long = "user")]
    user: bool,
    /// Write UNUSER: the user may have been deleted
    #[arg(short = 'U', long = "unuser")]
    unuser: bool,
    /// Write META: seen state, subscriptions and sieve of the user
    #[arg(short = 'v', long = "meta")]
    meta: bool,
    /// Write MAILBOX: sync the mailbox
    #[arg(short = 'm', long = "mailbox")]
    mailbox: bool,
    /// Write UNMAILBOX: the mailbox may have been removed
    #[arg(short = 'M', long = "unmailbox")]
    unmailbox: bool,
    /// Write APPEND: messages were appended to the mailbox
    #[arg(short = 'a', long = "append")]
    append: bool,
    /// Write MAILBOX, for an ACL change (there is no ACL record)
    #[arg(short = 'c', long = "acl")]
    acl: bool,
    /// Write QUOTA: sync the quota root
    #[arg(short = 'q', long = "quota")]
    quota: bool,
    /// Write ANNOTATION: the mailbox's annotations ("" = server annotations)
    #[arg(short = 'n', long = "annotation")]
    annotation: bool,
    /// Write SEEN (USER UNIQUEID): seen state of a mailbox the user does not own
    #[arg(short = 's', long = "seen")]
    seen: bool,
    /// Write SUB (USER MAILBOX): the user's subscription to the mailbox changed
    #[arg(short = 'b', long = "subscription")]
    subscription: bool,
}

/// What to write.
enum Work {
    Records(Vec<SyncLogRecord>),
    /// A raw line (or lines), already checked.
    Text(String),
}

struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn fail(code: u8, error: anyhow::Error) -> Failure {
    Failure { code, error }
}

fn usage(message: &str) -> Failure {
    let usage = Cli::command().render_usage();
    fail(EX_USAGE, anyhow!("{message}\n\n{usage}"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            let code = match err.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => EX_USAGE,
            };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("cyr_synclog: {}", describe(&error));
            ExitCode::from(code)
        }
    }
}

/// The error and its causes, leaving out causes the message already includes (the
/// library errors spell out their I/O cause).
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

fn run(cli: Cli) -> Result<(), Failure> {
    let work = work(&cli.kind, cli.values)?;
    let config = Config::from_file(&cli.config).map_err(|e| fail(EX_CONFIG, e.into()))?;
    become_cyrus(&config)?;
    set_umask(&config);
    let log = SyncLog::from_config(&config).map_err(|e| fail(EX_CONFIG, e.into()))?;
    if !log.is_enabled() {
        eprintln!(
            "cyr_synclog: sync_log is off in {}; nothing written",
            cli.config.display()
        );
        return Ok(());
    }
    let written = match &work {
        Work::Records(records) => log.append(records),
        Work::Text(text) => log.append_text(text),
    };
    written.map_err(|e| fail(EX_IOERR, e.into()))
}

/// Turns the command line into records, checking the values.
fn work(kind: &Kind, values: Vec<String>) -> Result<Work, Failure> {
    type One = fn(String) -> SyncLogRecord;
    type Two = fn(String, String) -> SyncLogRecord;
    let single: Option<(&str, One)> = if kind.user {
        Some(("-u", SyncLogRecord::user))
    } else if kind.unuser {
        Some(("-U", SyncLogRecord::unuser))
    } else if kind.meta {
        Some(("-v", SyncLogRecord::meta))
    } else if kind.mailbox {
        Some(("-m", SyncLogRecord::mailbox))
    } else if kind.unmailbox {
        Some(("-M", SyncLogRecord::unmailbox))
    } else if kind.append {
        Some(("-a", SyncLogRecord::append))
    } else if kind.acl {
        Some(("-c", SyncLogRecord::mailbox))
    } else if kind.quota {
        Some(("-q", SyncLogRecord::quota))
    } else if kind.annotation {
        Some(("-n", SyncLogRecord::annotation))
    } else {
        None
    };
    let double: Option<(&str, Two)> = if kind.seen {
        Some(("-s", SyncLogRecord::seen))
    } else if kind.subscription {
        Some(("-b", SyncLogRecord::sub))
    } else {
        None
    };
    let check = |flag: &str, value: &str, empty_ok: bool| {
        if value.is_empty() && !empty_ok {
            return Err(usage(&format!("{flag}: empty value")));
        }
        Ok(())
    };
    let record = if let Some((flag, make)) = single {
        let [value]: [String; 1] = values
            .try_into()
            .map_err(|_| usage(&format!("{flag} takes exactly one value")))?;
        check(flag, &value, flag == "-n")?;
        make(value)
    } else if let Some((flag, make)) = double {
        let [first, second]: [String; 2] = values
            .try_into()
            .map_err(|_| usage(&format!("{flag} takes exactly two values")))?;
        check(flag, &first, false)?;
        check(flag, &second, false)?;
        make(first, second)
    } else {
        let [line]: [String; 1] = values
            .try_into()
            .map_err(|_| usage("give a type flag and its value(s), or one complete record line"))?;
        check("record line", &line, false)?;
        return raw_line(line);
    };
    // A line break in a value cannot be written; say so before touching anything.
    record.to_line().map_err(|e| fail(EX_DATAERR, e.into()))?;
    Ok(Work::Records(vec![record]))
}

/// Checks a raw line: every line of it must be a record the log reader accepts.
fn raw_line(mut line: String) -> Result<Work, Failure> {
    if !line.ends_with('\n') {
        line.push('\n');
    }
    let contents = parse_log(line.as_bytes());
    if let Some(bad) = contents.skipped.first() {
        return Err(fail(
            EX_DATAERR,
            anyhow!(
                "not a valid sync_log record: {:?}: {}",
                bad.text,
                bad.reason
            ),
        ));
    }
    if contents.records.is_empty() || contents.incomplete_tail.is_some() {
        return Err(fail(
            EX_DATAERR,
            anyhow!("not a valid sync_log record: {line:?}"),
        ));
    }
    Ok(Work::Text(line))
}

/// Started as root, become the Cyrus user as every Cyrus program does, before any
/// file is created: a log file created by root could not be appended to by the
/// Cyrus daemons. The user is `$CYRUS_USER`, else `cyrus_user`, else `cyrus`; the
/// group `$CYRUS_GROUP`, else `cyrus_group`, else the user's primary group.
fn become_cyrus(config: &Config) -> Result<(), Failure> {
    if !geteuid().is_root() {
        return Ok(());
    }
    let name = env::var("CYRUS_USER")
        .ok()
        .or_else(|| config.string("cyrus_user").map(str::to_owned))
        .unwrap_or_else(|| "cyrus".to_owned());
    let user = User::from_name(&name)
        .with_context(|| format!("looking up user {name}"))
        .map_err(|e| fail(EX_NOUSER, e))?
        .ok_or_else(|| {
            fail(
                EX_NOUSER,
                anyhow!("must run as the Cyrus user: no user {name}"),
            )
        })?;
    let gid = match env::var("CYRUS_GROUP")
        .ok()
        .or_else(|| config.string("cyrus_group").map(str::to_owned))
    {
        Some(group) => {
            Group::from_name(&group)
                .with_context(|| format!("looking up group {group}"))
                .map_err(|e| fail(EX_NOUSER, e))?
                .ok_or_else(|| fail(EX_NOUSER, anyhow!("no group {group}")))?
                .gid
        }
        None => user.gid,
    };
    if user.uid == getuid() && user.uid == geteuid() && gid == getgid() && gid == getegid() {
        return Ok(());
    }
    let cname = CString::new(name.as_bytes())
        .map_err(|_| fail(EX_NOUSER, anyhow!("bad user name {name:?}")))?;
    let os_err = |what: &'static str| move |e: nix::Error| fail(EX_OSERR, anyhow!("{what}: {e}"));
    initgroups(&cname, gid).map_err(os_err("initgroups"))?;
    setgid(gid).map_err(os_err("setgid"))?;
    setuid(user.uid).map_err(os_err("setuid"))?;
    Ok(())
}

/// The `umask` setting (octal, default 077), as every Cyrus program applies it.
fn set_umask(config: &Config) {
    let value = config.string("umask").unwrap_or("077");
    let bits = value
        .bytes()
        .filter(|c| (b'0'..=b'7').contains(c))
        .fold(0 as nix::libc::mode_t, |acc, c| {
            (acc * 8 + nix::libc::mode_t::from(c - b'0')) & 0o7777
        });
    umask(Mode::from_bits_truncate(bits));
}
