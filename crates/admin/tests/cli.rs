//! csyncadm run as a program against a temporary imapd.conf and store: every
//! subcommand, its output and its exit status.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const M1: &[u8] = b"From: Alice <alice@example.com>\r\nTo: John <john@example.com>\r\nSubject: first\r\nDate: Tue, 14 Nov 2023 22:15:00 +0000\r\nMessage-ID: <m1@example.com>\r\n\r\nHello John.\r\n";

struct Env {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Env {
    fn new() -> Env {
        Env::with("")
    }

    /// A store with partitions `default` and `other`, plus `extra` settings.
    fn with(extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let conf = root.join("imapd.conf");
        fs::write(
            &conf,
            format!(
                "configdirectory: {}\npartition-default: {}\npartition-other: {}\n{extra}",
                root.join("conf").display(),
                root.join("spool").display(),
                root.join("other").display()
            ),
        )
        .unwrap();
        Env { dir, conf }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_csyncadm"));
        cmd.arg("-C").arg(&self.conf).args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The child may refuse and exit before reading its input (an unknown mailbox):
        // a broken pipe here is part of that, not a test failure.
        if let Err(e) = child.stdin.take().unwrap().write_all(input) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        checked(self.run(args), 0, args)
    }

    /// Runs a command that must exit with `code`; returns its standard error.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stderr)
    }

    fn deliver(&self, mailbox: &str, message: &[u8], extra: &[&str]) -> u32 {
        let mut args = vec!["deliver", mailbox];
        args.extend_from_slice(extra);
        let out = checked(self.run_stdin(&args, message), 0, &args);
        out.trim()
            .rsplit(' ')
            .next()
            .and_then(|uid| uid.parse().ok())
            .unwrap_or_else(|| panic!("no uid in {out:?}"))
    }

    /// The directory of a mailbox's message files, from `show`.
    fn mailbox_dir(&self, mailbox: &str) -> PathBuf {
        let show = self.ok(&["show", mailbox]);
        let line = show
            .lines()
            .find_map(|l| l.strip_prefix("directory:"))
            .expect("show prints the directory");
        PathBuf::from(line.trim())
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn checked(out: Output, code: i32, args: &[&str]) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The record line of `uid` in `show` output, split in columns.
fn record(show: &str, uid: u32) -> Vec<String> {
    show.lines()
        .filter_map(|l| l.strip_prefix("  "))
        .map(|l| l.split('\t').map(str::to_owned).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(&uid.to_string()))
        .unwrap_or_else(|| panic!("no record {uid} in\n{show}"))
}

#[test]
fn users_and_mailbox_listings() {
    let env = Env::new();
    env.ok(&["create", "user.john"]);
    env.ok(&["create", "user.john.Sent"]);
    env.ok(&["create", "user.alice"]);
    env.ok(&["create", "shared.lists", "--partition", "other"]);
    env.deliver("user.john.Sent", M1, &[]);
    assert_eq!(env.ok(&["users"]), "alice\njohn\n");

    let list = env.ok(&["mailboxes"]);
    let mut lines = list.lines();
    assert_eq!(
        lines.next(),
        Some("name\ttype\tuidvalidity\tlast_uid\thighestmodseq\tmessages\tpartition")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    // CREATE makes the missing parent `shared` too, as Cyrus's does.
    assert_eq!(
        names,
        [
            "shared",
            "shared.lists",
            "user.alice",
            "user.john",
            "user.john.Sent"
        ]
    );
    let sent = &rows[4];
    assert_eq!(sent[1], "e");
    assert!(sent[2].parse::<u32>().unwrap() > 0, "uidvalidity");
    assert_eq!(&sent[3..], ["1", "2", "1", "default"]);
    assert_eq!(rows[1][6], "other");

    let below_john = env.ok(&["mailboxes", "user.john.", "--no-header"]);
    assert_eq!(
        below_john
            .lines()
            .map(|l| l.split('\t').next().unwrap())
            .collect::<Vec<_>>(),
        ["user.john.Sent"]
    );
    let john = env.ok(&["mailboxes", "--no-header", "user.john"]);
    assert_eq!(john.lines().count(), 2);
}

#[test]
fn deliver_from_file_and_stdin_then_show() {
    let env = Env::new();
    env.ok(&["create", "user.john"]);
    let file = env.path("m1.eml");
    fs::write(&file, M1).unwrap();
    let out = env.ok(&[
        "deliver",
        "user.john",
        file.to_str().unwrap(),
        "--flags",
        "\\Seen $Label1",
        "--internaldate",
        "1700000100",
    ]);
    assert_eq!(out, "delivered to user.john as uid 1\n");
    assert_eq!(env.deliver("user.john", b"second\r\n", &["-"]), 2);
    assert_eq!(env.deliver("user.john", b"third\r\n", &[]), 3);

    let show = env.ok(&["show", "user.john"]);
    for expected in [
        "mailbox:         user.john\n",
        "internal name:   user.john\n",
        "type:            e\n",
        "owner:           john\n",
        "partition:       default\n",
        "last_uid:        3\n",
        "highestmodseq:   4\n",
        "options:         P\n",
        "quotaroot:       -\n",
        "acl:\n  john\tlrswipkxtecdan\n",
        "3 records, 0 expunged\n",
    ] {
        assert!(show.contains(expected), "{expected:?} in\n{show}");
    }
    let uniqueid = show
        .lines()
        .find_map(|l| l.strip_prefix("uniqueid:"))
        .unwrap()
        .trim();
    assert_eq!(uniqueid.len(), 36, "{uniqueid}");
    assert!(show.contains("sync_crc:") && show.contains("sync_crc_annot:"));
    assert_eq!(
        record(&show, 1),
        [
            "1",
            "(\\Seen $Label1)",
            "2",
            "edaa9f52a858bda063269730eb4f9881ad296e5e",
            "162",
            "2023-11-14T22:15:00Z (1700000100)"
        ]
    );
    assert_eq!(record(&show, 2)[1], "()");
    assert_eq!(record(&show, 2)[4], "8");
}

#[test]
fn deliver_converts_bare_lf_only_when_asked() {
    let env = Env::new();
    env.ok(&["create", "user.john"]);
    env.deliver("user.john", b"a\nb\r\nc\n", &["--lf-to-crlf"]);
    env.deliver("user.john", b"a\nb\n", &[]);
    let dir = env.mailbox_dir("user.john");
    assert_eq!(fs::read(dir.join("1.")).unwrap(), b"a\r\nb\r\nc\r\n");
    assert_eq!(fs::read(dir.join("2.")).unwrap(), b"a\nb\n");
    let show = env.ok(&["show", "user.john"]);
    assert_eq!(record(&show, 1)[4], "9");
    assert_eq!(record(&show, 2)[4], "4");
}

#[test]
fn create_rename_delete() {
    let env = Env::new();
    let out = env.ok(&[
        "create",
        "shared.team",
        "--partition",
        "other",
        "--acl",
        "anyone",
        "rl",
        "--acl",
        "-bob",
        "w",
    ]);
    assert!(out.starts_with("created shared.team (uniqueid "), "{out}");
    assert!(out.ends_with(", partition other)\n"), "{out}");
    let show = env.ok(&["show", "shared.team"]);
    assert!(show.contains("acl:\n  anyone\tlr\n  -bob\tw\n"), "{show}");
    assert!(show.contains("owner:           -\n"), "{show}");
    assert!(
        env.mailbox_dir("shared.team")
            .starts_with(env.path("other"))
    );

    env.ok(&["create", "user.john"]);
    env.ok(&["create", "user.john.Old"]);
    env.ok(&["create", "user.john.Old.Sub"]);
    env.deliver("user.john.Old", M1, &[]);
    assert_eq!(
        env.ok(&[
            "rename",
            "user.john.Old",
            "user.john.Archive",
            "--partition",
            "other"
        ]),
        "renamed user.john.Old to user.john.Archive\n"
    );
    let err = env.fails(&["show", "user.john.Old"], 66);
    assert!(err.contains("does not exist"), "{err}");
    env.ok(&["show", "user.john.Archive.Sub"]);
    let dir = env.mailbox_dir("user.john.Archive");
    assert!(dir.starts_with(env.path("other")));
    assert_eq!(fs::read(dir.join("1.")).unwrap(), M1);

    let out = env.ok(&["delete", "user.john.Archive.Sub"]);
    assert!(
        out.starts_with("deleted user.john.Archive.Sub (kept as DELETED.user.john.Archive.Sub."),
        "{out}"
    );
    let kept = env
        .ok(&["mailboxes", "DELETED.", "--no-header"])
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    // Deleting the DELETED. copy removes it for good (a tombstone remains).
    assert_eq!(env.ok(&["delete", &kept]), format!("deleted {kept}\n"));
    let list = env.ok(&["mailboxes", &kept, "--no-header"]);
    assert!(list.starts_with(&format!("{kept}\ted\t")), "{list}");
}

#[test]
fn flags_and_expunge() {
    let env = Env::new();
    env.ok(&["create", "user.john"]);
    for i in 1..=4 {
        env.deliver("user.john", format!("m{i}\r\n").as_bytes(), &[]);
    }
    let out = env.ok(&["flags", "user.john", "1:3,7", "+\\Seen", "+$Label1"]);
    assert_eq!(out, "user.john: added \\Seen $Label1 on 3 of 3 messages\n");
    // A removal that starts with '-' is a change, not an option.
    let out = env.ok(&["flags", "user.john", "2", "-\\Seen"]);
    assert_eq!(out, "user.john: removed \\Seen on 1 of 1 messages\n");
    env.ok(&["flags", "user.john", "3:*", "=\\Flagged \\Deleted"]);
    let show = env.ok(&["show", "user.john"]);
    assert_eq!(record(&show, 1)[1], "(\\Seen $Label1)");
    assert_eq!(record(&show, 2)[1], "($Label1)");
    assert_eq!(record(&show, 3)[1], "(\\Deleted \\Flagged)");
    assert_eq!(record(&show, 4)[1], "(\\Deleted \\Flagged)");
    assert_eq!(
        env.ok(&["flags", "user.john", "9:10", "+\\Seen"]),
        "user.john: no message matches 9:10\n"
    );

    // Without a set: the \Deleted ones; with one: those, whatever their flags.
    assert_eq!(
        env.ok(&["expunge", "user.john"]),
        "user.john: expunged 2 messages\n"
    );
    assert_eq!(
        env.ok(&["expunge", "user.john", "1"]),
        "user.john: expunged 1 messages\n"
    );
    let show = env.ok(&["show", "user.john"]);
    assert_eq!(record(&show, 1)[1], "(\\Expunged \\Seen $Label1)");
    assert_eq!(record(&show, 2)[1], "($Label1)");
    assert!(show.contains("4 records, 3 expunged\n"), "{show}");
    // Expunged messages are out of reach of flag changes.
    assert_eq!(
        env.ok(&["flags", "user.john", "1", "-\\Seen"]),
        "user.john: no message matches 1\n"
    );
}

#[test]
fn acl_quota_and_annotations() {
    let env = Env::new();
    env.ok(&["create", "user.john"]);
    env.ok(&["create", "user.john.Sent"]);
    env.deliver("user.john.Sent", M1, &[]);

    assert_eq!(
        env.ok(&["acl", "user.john", "anyone", "rl"]),
        "user.john: anyone now has lr\n"
    );
    assert_eq!(
        env.ok(&["acl", "user.john", "anyone", "+s"]),
        "user.john: anyone now has lrs\n"
    );
    assert_eq!(
        env.ok(&["acl", "user.john", "anyone", "-r"]),
        "user.john: anyone now has ls\n"
    );
    assert_eq!(
        env.ok(&["acl", "user.john"]),
        "john\tlrswipkxtecdan\nanyone\tls\n"
    );
    assert_eq!(env.ok(&["acl", "user.john", "anyone"]), "anyone\tls\n");
    assert_eq!(
        env.ok(&["acl", "user.john", "anyone", "--delete"]),
        "user.john: removed anyone from the ACL\n"
    );
    assert_eq!(env.ok(&["acl", "user.john"]), "john\tlrswipkxtecdan\n");
    env.fails(&["acl", "user.john", "anyone", "lrz"], 64);
    env.fails(&["acl", "user.john", "anyone"], 66);

    let err = env.fails(&["quota", "user.john"], 66);
    assert!(err.contains("user.john is not a quota root"), "{err}");
    let out = env.ok(&[
        "quota",
        "user.john",
        "--storage",
        "10240",
        "--messages",
        "500",
    ]);
    assert_eq!(
        out,
        "quota root: user.john\nstorage:    1 KiB of 10240 KiB\nmessages:   1 of 500\nfolders:    2\n"
    );
    // A limit not given stays; `none` lifts one.
    let out = env.ok(&["quota", "user.john", "--messages", "none"]);
    assert!(out.contains("storage:    1 KiB of 10240 KiB\n"), "{out}");
    assert!(out.contains("messages:   1 (no limit)\n"), "{out}");
    let show = env.ok(&["show", "user.john.Sent"]);
    assert!(show.contains("quotaroot:       user.john\n"), "{show}");
    env.fails(&["quota", "user.john", "--storage", "lots"], 64);
    env.fails(&["quota", "user.john", "--storage", "1", "--remove"], 64);
    assert_eq!(
        env.ok(&["quota", "user.john", "--remove"]),
        "removed quota root user.john\n"
    );
    env.fails(&["quota", "user.john", "--remove"], 66);

    assert_eq!(
        env.ok(&["annotation", "user.john", "/comment", "hello world"]),
        "user.john: set /comment (shared)\n"
    );
    env.ok(&[
        "annotation",
        "user.john",
        "/private/comment",
        "--user",
        "john",
        "mine",
    ]);
    assert_eq!(
        env.ok(&["annotation", "user.john", "/shared/comment"]),
        "hello world\n"
    );
    assert_eq!(
        env.ok(&["annotation", "user.john", "/comment", "--user", "john"]),
        "mine\n"
    );
    let show = env.ok(&["show", "user.john"]);
    assert!(
        show.contains("annotations:\n  /comment\tshared\tmodseq 0\t\"hello world\"\n  /comment\tprivate:john\tmodseq 0\t\"mine\"\n"),
        "{show}"
    );
    assert_eq!(
        env.ok(&["annotation", "user.john", "/comment", "--delete"]),
        "user.john: deleted /comment (shared)\n"
    );
    env.fails(&["annotation", "user.john", "/comment"], 66);
    env.fails(&["annotation", "user.john", "/private/comment", "x"], 64);
    env.fails(&["annotation", "user.john", "comment", "x"], 64);
    // "" is the server.
    assert_eq!(
        env.ok(&["annotation", "", "/motd", "maintenance at noon"]),
        "server: set /motd (shared)\n"
    );
    assert_eq!(
        env.ok(&["annotation", "", "/motd"]),
        "maintenance at noon\n"
    );
}

#[test]
fn seen_subscriptions_and_sieve() {
    let env = Env::new();
    env.ok(&["create", "user.john"]);
    env.ok(&["create", "shared.news"]);
    for i in 1..=3 {
        env.deliver("user.john", format!("m{i}\r\n").as_bytes(), &[]);
        env.deliver("shared.news", format!("n{i}\r\n").as_bytes(), &[]);
    }
    // The owner's seen state is the \Seen flag...
    assert_eq!(
        env.ok(&["seen", "john", "user.john", "2:*"]),
        "user.john: 2 messages marked seen for john\n"
    );
    let show = env.ok(&["show", "user.john"]);
    assert_eq!(record(&show, 1)[1], "()");
    assert_eq!(record(&show, 3)[1], "(\\Seen)");
    // ...anyone else's lives apart and leaves the flags alone.
    env.ok(&["seen", "john", "shared.news", "1,3"]);
    let show = env.ok(&["show", "shared.news"]);
    assert_eq!(record(&show, 1)[1], "()");
    env.fails(&["seen", "../john", "user.john", "1"], 65);

    assert_eq!(
        env.ok(&["subscribe", "john", "shared.news"]),
        "john subscribed to shared.news\n"
    );
    env.ok(&["subscribe", "john", "user.john"]);
    assert_eq!(env.ok(&["subscribe", "john"]), "shared.news\nuser.john\n");
    assert_eq!(
        env.ok(&["subscribe", "john", "shared.news", "--remove"]),
        "john unsubscribed from shared.news\n"
    );
    assert_eq!(env.ok(&["subscribe", "john"]), "user.john\n");

    let script = env.path("vacation.sieve");
    fs::write(&script, b"require \"vacation\";\r\nvacation \"away\";\r\n").unwrap();
    assert_eq!(
        env.ok(&[
            "sieve",
            "john",
            "put",
            "vacation",
            script.to_str().unwrap(),
            "--activate"
        ]),
        "stored sieve script vacation and activated for john\n"
    );
    let out = checked(
        env.run_stdin(&["sieve", "john", "put", "spam", "-"], b"keep;\r\n"),
        0,
        &["sieve put -"],
    );
    assert_eq!(out, "stored sieve script spam for john\n");
    let list = env.ok(&["sieve", "john", "list"]);
    let rows: Vec<Vec<&str>> = list.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert_eq!(&rows[0][..2], ["spam", "-"]);
    assert_eq!(&rows[1][..2], ["vacation", "active"]);
    assert!(rows[1][2].ends_with('Z'), "{list}");
    assert_eq!(
        env.ok(&["sieve", "john", "show", "vacation"]),
        "require \"vacation\";\r\nvacation \"away\";\r\n"
    );
    env.ok(&["sieve", "john", "activate", "spam"]);
    assert!(
        env.ok(&["sieve", "john", "list"])
            .contains("spam\tactive\t")
    );
    env.ok(&["sieve", "john", "deactivate"]);
    assert!(!env.ok(&["sieve", "john", "list"]).contains("active"));
    env.ok(&["sieve", "john", "delete", "spam"]);
    env.fails(&["sieve", "john", "show", "spam"], 66);
    env.fails(&["sieve", "john", "activate", "spam"], 66);
    env.fails(
        &["sieve", "john", "put", "../evil", script.to_str().unwrap()],
        65,
    );
    // Larger than Cyrus's default sieve_maxscriptsize (32 KiB).
    let big = env.path("big.sieve");
    fs::write(&big, vec![b'#'; 33 * 1024]).unwrap();
    let err = env.fails(&["sieve", "john", "put", "big", big.to_str().unwrap()], 65);
    assert!(err.contains("sieve_maxscriptsize"), "{err}");
}

#[test]
fn delete_user_removes_everything() {
    let env = Env::new();
    env.ok(&["create", "user.john"]);
    env.ok(&["create", "user.john.Sent"]);
    env.ok(&["create", "user.alice"]);
    env.deliver("user.john", M1, &[]);
    env.ok(&["subscribe", "john", "user.john.Sent"]);
    let out = env.ok(&["delete-user", "john"]);
    assert_eq!(out, "deleted user john (2 mailbox entries)\n");
    assert_eq!(env.ok(&["users"]), "alice\n");
    assert_eq!(env.ok(&["subscribe", "john"]), "");
    let err = env.fails(&["delete-user", "john"], 67);
    assert!(
        err.starts_with("csyncadm: cannot delete user (john): user john does not exist\n"),
        "{err}"
    );
    assert!(err.contains("hint: `csyncadm users`"), "{err}");
}

#[test]
fn errors_name_what_failed_and_exit_with_sysexits() {
    let env = Env::new();
    env.ok(&["create", "user.john"]);
    env.deliver("user.john", M1, &[]);

    let err = env.fails(&["show", "user.nobody"], 66);
    assert_eq!(
        err.lines().next().unwrap(),
        "csyncadm: cannot show (user.nobody): mailbox user.nobody does not exist"
    );
    assert!(err.contains("csyncadm: hint: "), "{err}");
    let out = env.run_stdin(&["deliver", "user.nobody"], M1);
    assert_eq!(out.status.code(), Some(66));
    assert!(text(&out.stderr).starts_with("csyncadm: cannot deliver (user.nobody): "));
    env.fails(&["flags", "user.nobody", "1", "+\\Seen"], 66);
    env.fails(&["expunge", "user.nobody"], 66);
    env.fails(&["delete", "user.nobody"], 66);
    env.fails(&["export", "user.nobody", "--mbox", "-"], 66);

    // Names that would leave the spool never get near the disk.
    for bad in [
        "../../etc",
        "user.john/../../x",
        "user..john",
        "user.john.",
        ".hidden",
    ] {
        let err = env.fails(&["create", bad], 65);
        assert!(
            err.starts_with(&format!("csyncadm: cannot create ({bad}): bad name")),
            "{err}"
        );
    }
    let err = env.fails(&["create", "user.x", "--partition", "../../etc"], 65);
    assert!(err.contains("bad name"), "{err}");
    let err = env.fails(&["create", "user.x", "--partition", "nosuch"], 65);
    assert!(err.contains("unknown partition \"nosuch\""), "{err}");
    assert!(
        err.contains("configured partitions: default, other"),
        "{err}"
    );
    env.fails(&["rename", "user.john", "../x"], 65);
    env.fails(&["subscribe", "john", "user/../x"], 65);
    let spool: Vec<_> = fs::read_dir(env.path("spool/uuid")).unwrap().collect();
    assert_eq!(spool.len(), 1, "only user.john's directory");

    // Malformed uid sets and flags are usage errors.
    for set in ["0", "1:x", "", "1,,2", "3-4", "*:", "99999999999"] {
        let err = env.fails(&["flags", "user.john", set, "+\\Seen"], 64);
        assert!(
            err.contains("uid set") || err.contains("uid"),
            "{set:?}: {err}"
        );
    }
    env.fails(&["expunge", "user.john", "1-2"], 64);
    env.fails(&["seen", "john", "user.john", "x"], 64);
    let err = env.fails(&["flags", "user.john", "1", "+\\Bogus"], 64);
    assert!(err.contains("unknown system flag \\Bogus"), "{err}");
    env.fails(&["flags", "user.john", "1", "Seen"], 64);
    env.fails(&["deliver", "user.john", "--flags", "\\Recent"], 64);

    // Command-line mistakes.
    env.fails(&[], 64);
    env.fails(&["frobnicate"], 64);
    env.fails(&["flags", "user.john", "1"], 64);
    env.fails(&["export", "user.john"], 64);
    env.fails(
        &["export", "user.john", "--mbox", "a", "--maildir", "b"],
        64,
    );
    assert!(env.ok(&["--help"]).contains("Commands:"));
    assert!(env.ok(&["--version"]).starts_with("csyncadm "));

    // Missing input, existing mailbox.
    let err = env.fails(&["deliver", "user.john", "/nonexistent/message"], 66);
    assert!(err.contains("cannot read /nonexistent/message"), "{err}");
    let err = env.fails(&["create", "user.john"], 73);
    assert!(err.contains("mailbox user.john already exists"), "{err}");
    env.fails(&["delete-user", "a/b"], 65);
}

#[test]
fn configuration_errors_exit_78() {
    let env = Env::new();
    let missing = env.path("nope.conf");
    let out = Command::new(env!("CARGO_BIN_EXE_csyncadm"))
        .arg("-C")
        .arg(&missing)
        .arg("users")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "csyncadm: cannot read the configuration ({}): cannot read configuration file",
            missing.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: give the configuration file with -C"),
        "{err}"
    );

    for (conf, expect) in [
        ("partition-default: /tmp/x\n", "configdirectory is not set"),
        (
            "configdirectory: /tmp/x\n",
            "default partition \"default\" has no partition-default",
        ),
        (
            "configdirectory: /tmp/x\npartition-default: /tmp/y\ndelete_mode: soon\n",
            ":3: invalid value 'soon' for delete_mode",
        ),
    ] {
        let path = env.path("bad.conf");
        fs::write(&path, conf).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_csyncadm"))
            .arg("-C")
            .arg(&path)
            .arg("users")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{conf}");
        assert!(text(&out.stderr).contains(expect), "{}", text(&out.stderr));
    }
}

#[test]
fn unixhierarchysep_names_are_external() {
    let env = Env::with("unixhierarchysep: yes\n");
    env.ok(&["create", "user/john.doe"]);
    env.ok(&["create", "user/john.doe/Foo.Bar"]);
    assert_eq!(env.ok(&["users"]), "john.doe\n");
    let list = env.ok(&["mailboxes", "--no-header", "user/john.doe/"]);
    assert!(list.starts_with("user/john.doe/Foo.Bar\t"), "{list}");
    let show = env.ok(&["show", "user/john.doe/Foo.Bar"]);
    assert!(
        show.contains("mailbox:         user/john.doe/Foo.Bar\n"),
        "{show}"
    );
    assert!(
        show.contains("internal name:   user.john^doe.Foo^Bar\n"),
        "{show}"
    );
    env.ok(&["subscribe", "john.doe", "user/john.doe/Foo.Bar"]);
    assert_eq!(
        env.ok(&["subscribe", "john.doe"]),
        "user/john.doe/Foo.Bar\n"
    );
    let err = env.fails(&["show", "user/john.doe/Nope"], 66);
    assert!(
        err.contains("mailbox user/john.doe/Nope does not exist"),
        "{err}"
    );
}

/// Two messages with `From ` lines to quote, one without a final line end, and an
/// expunged one that must not appear.
fn export_fixture() -> Env {
    let env = Env::new();
    env.ok(&["create", "user.john"]);
    env.deliver(
        "user.john",
        b"From: a@example.com\r\nSubject: one\r\n\r\nFrom here\r\n>From there\r\n",
        &["--flags", "\\Seen", "--internaldate", "1700000100"],
    );
    env.deliver(
        "user.john",
        b"Subject: two\r\n\r\nbody",
        &[
            "--flags",
            "\\Flagged \\Answered $Label1",
            "--internaldate",
            "1700000200",
        ],
    );
    env.deliver(
        "user.john",
        b"Subject: gone\r\n\r\n",
        &["--internaldate", "1700000300"],
    );
    env.ok(&["expunge", "user.john", "3"]);
    env
}

#[test]
fn export_mbox_is_mboxrd_with_lf() {
    let env = export_fixture();
    let mbox = env.path("john.mbox");
    let out = env.ok(&["export", "user.john", "--mbox", mbox.to_str().unwrap()]);
    assert_eq!(
        out,
        format!("exported 2 messages from user.john to {}\n", mbox.display())
    );
    let expected: &[u8] = b"From MAILER-DAEMON Tue Nov 14 22:15:00 2023\n\
        From: a@example.com\nSubject: one\n\n>From here\n>>From there\n\n\
        From MAILER-DAEMON Tue Nov 14 22:16:40 2023\n\
        Subject: two\n\nbody\n\n";
    assert_eq!(text(&fs::read(&mbox).unwrap()), text(expected));
    assert_eq!(fs::read(&mbox).unwrap(), expected);

    // Never overwritten.
    let err = env.fails(
        &["export", "user.john", "--mbox", mbox.to_str().unwrap()],
        73,
    );
    assert!(
        err.contains("File exists") || err.contains("exists"),
        "{err}"
    );
    assert_eq!(fs::read(&mbox).unwrap(), expected);

    // To standard output, with the summary on standard error.
    let out = env.run(&["export", "user.john", "--mbox", "-"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, expected);
    assert!(text(&out.stderr).contains("exported 2 messages"));
}

#[test]
fn export_maildir_names_flags_and_bytes() {
    let env = export_fixture();
    let maildir = env.path("Maildir");
    env.ok(&[
        "export",
        "user.john",
        "--maildir",
        maildir.to_str().unwrap(),
    ]);
    let mut cur: Vec<String> = fs::read_dir(maildir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cur.sort();
    assert_eq!(cur, ["1700000100.1.csync:2,S", "1700000200.2.csync:2,FR"]);
    assert_eq!(
        fs::read(maildir.join("cur/1700000100.1.csync:2,S")).unwrap(),
        b"From: a@example.com\nSubject: one\n\nFrom here\n>From there\n"
    );
    assert_eq!(
        fs::read(maildir.join("cur/1700000200.2.csync:2,FR")).unwrap(),
        b"Subject: two\n\nbody"
    );
    let mtime = fs::metadata(maildir.join("cur/1700000100.1.csync:2,S"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        mtime
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        1700000100
    );
    for sub in ["new", "tmp"] {
        assert_eq!(fs::read_dir(maildir.join(sub)).unwrap().count(), 0, "{sub}");
    }
    // A second export into the same Maildir refuses to overwrite.
    env.fails(
        &[
            "export",
            "user.john",
            "--maildir",
            maildir.to_str().unwrap(),
        ],
        73,
    );
}

fn message_file(env: &Env, mailbox: &str, uid: u32) -> PathBuf {
    env.mailbox_dir(mailbox).join(format!("{uid}."))
}

#[test]
fn verify_reports_a_damaged_message_that_repair_cannot_fix() {
    let env = Env::new();
    env.ok(&["create", "user.john"]);
    env.deliver("user.john", M1, &[]);
    env.deliver("user.john", b"second message\r\n", &[]);
    let out = env.ok(&["verify"]);
    assert!(
        out.ends_with("1 mailboxes, 2 records, 178 bytes hashed: 0 problems, 0 leftovers\n"),
        "{out}"
    );

    // Same length, different bytes: only hashing finds it.
    let file = message_file(&env, "user.john", 2);
    fs::write(&file, b"SECOND MESSAGE\r\n").unwrap();
    let out = checked(env.run(&["verify", "--no-hash"]), 0, &["verify --no-hash"]);
    assert!(out.contains("0 problems"), "{out}");
    let out = checked(env.run(&["verify"]), 1, &["verify"]);
    assert!(
        out.contains("problem: user.john uid 2: message file is "),
        "{out}"
    );
    assert!(
        out.contains("note: a missing or damaged message file"),
        "{out}"
    );

    let out = checked(env.run(&["verify", "--repair"]), 1, &["verify --repair"]);
    let after = out.split("verifying again").nth(1).expect("verified again");
    assert!(after.contains("problem: user.john uid 2: "), "{out}");

    // A missing file is reported too, even without hashing.
    fs::remove_file(message_file(&env, "user.john", 1)).unwrap();
    let out = checked(
        env.run(&["verify", "--no-hash", "user.john"]),
        1,
        &["verify"],
    );
    assert!(
        out.contains("problem: user.john uid 1: message file "),
        "{out}"
    );
    assert!(out.contains(" is missing"), "{out}");
}

#[test]
fn verify_repair_removes_leftovers() {
    let env = Env::new();
    env.ok(&["create", "user.john"]);
    env.deliver("user.john", M1, &[]);
    let stray = message_file(&env, "user.john", 999);
    fs::write(&stray, b"left by an interrupted transaction").unwrap();

    // Leftovers are harmless: reported, but the store is clean.
    let out = env.ok(&["verify"]);
    assert!(
        out.contains(&format!("leftover: {}\n", stray.display())),
        "{out}"
    );
    assert!(out.contains("0 problems, 1 leftovers"), "{out}");
    assert!(stray.exists());

    let out = env.ok(&["verify", "--repair"]);
    assert!(out.contains("repair: 1 fixed"), "{out}");
    assert!(out.ends_with("0 problems, 0 leftovers\n"), "{out}");
    assert!(!stray.exists());
    assert!(message_file(&env, "user.john", 1).exists());
    assert!(!env.ok(&["verify"]).contains("leftover:"));
}

/// Every subcommand and option in `--help` is in the manual page.
#[test]
fn man_page_documents_every_subcommand_and_option() {
    let man_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../man/csyncadm.8");
    let man = fs::read_to_string(&man_path)
        .unwrap()
        .replace("\\-", "-")
        .replace("\\(aq", "'");
    let env = Env::new();
    let help = env.ok(&["--help"]);
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // Wrapped descriptions continue with a deeper indent.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 18, "{commands:?}");
    for command in &commands {
        assert!(
            man.contains(&format!(".B {command}")) || man.contains(&format!(".SS {command}")),
            "subcommand {command} is not in {}",
            man_path.display()
        );
        let sub_help = env.ok(&["help", command]);
        for word in sub_help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        {
            let end = word
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(word.len());
            let option = &word[..end];
            if option.starts_with("--") && option.len() > 2 && option != "--help" {
                assert!(
                    man.contains(option),
                    "option {option} of {command} is not in {}",
                    man_path.display()
                );
            }
        }
    }
    for action in ["put", "activate", "deactivate", "delete", "list", "show"] {
        assert!(
            man.contains(&format!("sieve USER {action}")) || man.contains(&format!(".B {action}")),
            "sieve {action}"
        );
    }
    for section in [".SH EXIT STATUS", ".SH FILES", ".SH SEE ALSO"] {
        assert!(man.contains(section), "{section}");
    }
}

/// The manual page passes `mandoc -T lint` (mandoc is a test requirement: `.ci/run`
/// installs it; without it this fails rather than pass unchecked).
#[test]
fn man_page_lints_clean() {
    let man_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../man/csyncadm.8");
    let out = Command::new("mandoc")
        .args(["-T", "lint", "-W", "warning"])
        .arg(&man_path)
        .output()
        .expect("mandoc is needed to check the manual page: apt-get install mandoc");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
