//! The command line. Mailbox names are the administrator's external form (converted
//! with the configured namespace); userids are plain (`john`, `john@example.com`).

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

/// Administer a csync (Cyrus-style) mailstore: deliver, create, rename and delete
/// mailboxes, change flags, ACLs, quotas, annotations, seen state, subscriptions and
/// sieve scripts, verify and repair the store, and export mailboxes.
#[derive(Debug, Parser)]
#[command(name = "csyncadm", version)]
pub struct Cli {
    /// imapd.conf to read
    #[arg(
        short = 'C',
        value_name = "IMAPD.CONF",
        default_value = csync_config::DEFAULT_CONFIG_PATH,
        global = true
    )]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

/// A quota limit: a number, or `none` for no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    Max(u32),
}

fn parse_limit(text: &str) -> Result<Limit, String> {
    match text {
        "none" | "unlimited" => Ok(Limit::Unlimited),
        _ => match text.parse::<u32>() {
            // 4294967295 is how the protocol spells "unlimited" (spec §8.11).
            Ok(n) if n < u32::MAX => Ok(Limit::Max(n)),
            _ => Err(format!(
                "{text:?} is not a limit: give a number below 4294967295, or none"
            )),
        },
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the users that own mailboxes
    Users,

    /// List mailboxes (name, type, uidvalidity, last_uid, highestmodseq, messages,
    /// partition), tab-separated
    Mailboxes {
        /// Only mailboxes whose names start with this
        prefix: Option<String>,
        /// Leave out the heading line
        #[arg(long)]
        no_header: bool,
    },

    /// Show a mailbox's header, ACL, annotations and every record
    Show { mailbox: String },

    /// Deliver a message into a mailbox (like Cyrus's deliver)
    Deliver {
        mailbox: String,
        /// The message; standard input when absent or `-`
        file: Option<PathBuf>,
        /// Flags to set, space-separated: '\Seen $Label1'
        #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
        flags: Option<String>,
        /// Internal date, seconds since the epoch (default: now)
        #[arg(long, value_name = "EPOCH")]
        internaldate: Option<u64>,
        /// Turn bare LF line ends into CRLF while storing (Cyrus stores CRLF)
        #[arg(long)]
        lf_to_crlf: bool,
    },

    /// Create a mailbox
    Create {
        mailbox: String,
        /// Partition to create it on (default: defaultpartition)
        #[arg(long)]
        partition: Option<String>,
        /// An ACL entry, repeatable; replaces the default ACL
        #[arg(
            long,
            num_args = 2,
            value_names = ["IDENTIFIER", "RIGHTS"],
            action = ArgAction::Append,
            allow_hyphen_values = true
        )]
        acl: Vec<String>,
    },

    /// Rename a mailbox and everything below it
    Rename {
        old: String,
        new: String,
        /// Move the mailboxes to this partition
        #[arg(long)]
        partition: Option<String>,
    },

    /// Delete a mailbox (kept as DELETED.* with delete_mode: delayed)
    Delete { mailbox: String },

    /// Change flags: +FLAG adds, -FLAG removes, =FLAG sets exactly
    Flags {
        mailbox: String,
        /// Messages, as an IMAP uid set: 1:3,7,9:*
        uids: String,
        /// Changes such as +\Seen -$Label1 =\Flagged (a lone = clears all flags)
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true, value_name = "(+|-|=)FLAG")]
        changes: Vec<String>,
    },

    /// Expunge messages: the given uids, or all messages flagged \Deleted
    Expunge {
        mailbox: String,
        /// Messages to expunge whatever their flags, as a uid set
        uids: Option<String>,
    },

    /// Show or change a mailbox's ACL
    Acl {
        mailbox: String,
        /// Who (user, group:name, anyone; a leading - for negative rights)
        #[arg(allow_hyphen_values = true)]
        identifier: Option<String>,
        /// Rights (lrswipkxtecdan): replaces; +RIGHTS adds; -RIGHTS removes
        #[arg(allow_hyphen_values = true)]
        rights: Option<String>,
        /// Remove IDENTIFIER from the ACL
        #[arg(long, requires = "identifier", conflicts_with = "rights")]
        delete: bool,
    },

    /// Show or set a quota root's limits
    Quota {
        /// The quota root (a mailbox name, usually a user's INBOX)
        root: String,
        /// Storage limit in KiB, or none
        #[arg(long, value_name = "KiB", value_parser = parse_limit)]
        storage: Option<Limit>,
        /// Message count limit, or none
        #[arg(long, value_name = "N", value_parser = parse_limit)]
        messages: Option<Limit>,
        /// Remove the quota root
        #[arg(long, conflicts_with_all = ["storage", "messages"])]
        remove: bool,
    },

    /// Show, set or delete a mailbox annotation ("" for a server annotation)
    Annotation {
        /// Mailbox, or "" for the server
        mailbox: String,
        /// Entry: /comment, /shared/comment, /private/comment (with --user)
        entry: String,
        /// New value
        value: Option<String>,
        /// Whose private value (default: the shared one)
        #[arg(long)]
        user: Option<String>,
        /// Delete the value
        #[arg(long, conflicts_with = "value")]
        delete: bool,
    },

    /// Mark messages seen for a user
    Seen {
        user: String,
        mailbox: String,
        /// Messages, as a uid set
        uids: String,
    },

    /// List a user's subscriptions, or subscribe/unsubscribe
    Subscribe {
        user: String,
        mailbox: Option<String>,
        /// Unsubscribe instead
        #[arg(long, requires = "mailbox")]
        remove: bool,
    },

    /// Manage a user's sieve scripts
    Sieve {
        user: String,
        #[command(subcommand)]
        action: SieveAction,
    },

    /// Delete a user: every mailbox, seen state, subscriptions, sieve scripts, quota
    DeleteUser { user: String },

    /// Set or delete a replication login in the password file (like saslpasswd2)
    Passwd {
        /// The login (the identity a master authenticates as, e.g. repluser)
        user: String,
        /// Delete the login instead
        #[arg(short = 'd', long)]
        delete: bool,
        /// Read the password from standard input without prompting (like saslpasswd2 -p)
        #[arg(short = 'p', long)]
        pipe: bool,
        /// Password file (default: csync_password_file, or <configdirectory>/csync.passwd)
        #[arg(short = 'f', long, value_name = "FILE")]
        file: Option<PathBuf>,
    },

    /// Check index against files (GUIDs, sizes, CRCs, counters), optionally repair
    Verify {
        /// Only mailboxes whose names start with this
        prefix: Option<String>,
        /// Do not re-read message files to check their SHA-1
        #[arg(long)]
        no_hash: bool,
        /// Remove leftovers and fix CRCs and counters
        #[arg(long)]
        repair: bool,
    },

    /// Print the store as its users see it over IMAP: the cyrus-test-dump/1 JSON of
    /// tests/cyrus/dump.py (compare with `dump.py diff <cyrus dir> <file>`)
    Dump {
        /// Only these users, comma-separated (default: every user with an INBOX)
        #[arg(long, value_delimiter = ',', value_name = "USER,...")]
        users: Vec<String>,
        /// Leave out the SHA-1 of every message (no message file is read)
        #[arg(long)]
        no_bodies: bool,
        /// Leave out the sieve scripts (active and scripts)
        #[arg(long)]
        no_sieve: bool,
        /// Add the DELETED.* mailboxes (internal names)
        #[arg(long)]
        deleted: bool,
        /// Write to FILE instead of standard output
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },

    /// Export a mailbox as an mboxrd file or a Maildir
    Export {
        mailbox: String,
        /// mboxrd file to create (- for standard output)
        #[arg(long, value_name = "FILE", required_unless_present = "maildir")]
        mbox: Option<PathBuf>,
        /// Maildir to write into (created if needed)
        #[arg(long, value_name = "DIR", conflicts_with = "mbox")]
        maildir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SieveAction {
    /// Store a script (from FILE, or - for standard input)
    Put {
        name: String,
        file: PathBuf,
        /// Also make it the active script
        #[arg(long)]
        activate: bool,
    },
    /// Make a script the active one
    Activate { name: String },
    /// Make no script active
    Deactivate,
    /// Delete a script
    Delete { name: String },
    /// List scripts (name, active, last update)
    List,
    /// Print a script
    Show { name: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit("none"), Ok(Limit::Unlimited));
        assert_eq!(parse_limit("10240"), Ok(Limit::Max(10240)));
        assert_eq!(parse_limit("0"), Ok(Limit::Max(0)));
        for bad in ["", "-1", "4294967295", "1k", "x"] {
            assert!(parse_limit(bad).is_err(), "{bad:?}");
        }
    }
}
