//! The cyr_synclog binary: options, records, gating, channels and exit codes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::unistd::{User, geteuid};

struct Instance {
    dir: tempfile::TempDir,
}

impl Instance {
    fn new(extra: &str) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let conf = format!(
            "configdirectory: {}/conf\npartition-default: {}/spool\n{extra}",
            dir.path().display(),
            dir.path().display()
        );
        fs::write(dir.path().join("imapd.conf"), conf).unwrap();
        Instance { dir }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("imapd.conf")
    }

    fn log(&self, sub: &str) -> PathBuf {
        self.dir.path().join("conf/sync").join(sub)
    }

    fn read(&self, sub: &str) -> String {
        fs::read_to_string(self.log(sub)).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> Output {
        cyr_synclog(&[&["-C", self.conf().to_str().unwrap()], args].concat())
    }
}

/// Runs our cyr_synclog. As root it would switch to the Cyrus user; here it is
/// told that the current user is the Cyrus user (the interop test covers the
/// switch).
fn cyr_synclog(args: &[&str]) -> Output {
    let me = User::from_uid(geteuid()).unwrap().unwrap();
    Command::new(env!("CARGO_BIN_EXE_cyr_synclog"))
        .args(args)
        .env("CYRUS_USER", &me.name)
        .env_remove("CYRUS_GROUP")
        .output()
        .unwrap()
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_flag_writes_its_record() {
    let inst = Instance::new("sync_log: 1\n");
    let cases: &[(&[&str], &str)] = &[
        (&["-u", "john"], "USER john\n"),
        (&["-U", "john"], "UNUSER john\n"),
        (&["-v", "john"], "META john\n"),
        (
            &["-m", "user.john.Other Stuff"],
            "MAILBOX \"user.john.Other Stuff\"\n",
        ),
        (
            &["-M", "DELETED.user.john.Sent.6B0218D3"],
            "UNMAILBOX DELETED.user.john.Sent.6B0218D3\n",
        ),
        (&["-a", "user.john"], "APPEND user.john\n"),
        (&["-c", "user.john"], "MAILBOX user.john\n"),
        (&["-q", "user.john"], "QUOTA user.john\n"),
        (&["-n", "user.john"], "ANNOTATION user.john\n"),
        (&["-n", ""], "ANNOTATION \"\"\n"),
        (
            &["-s", "john", "pehbuvnnaedto8n5yeipsmna"],
            "SEEN john pehbuvnnaedto8n5yeipsmna\n",
        ),
        (
            &["-b", "john", "user.john.Sent"],
            "SUB john user.john.Sent\n",
        ),
        (&["--user", "bob"], "USER bob\n"),
        (&["--subscription", "bob", "user.bob"], "SUB bob user.bob\n"),
        (
            &["-m", "user.j&AOk-r&APQ-me"],
            "MAILBOX user.j&AOk-r&APQ-me\n",
        ),
        (
            &["-m", "user.john.a \"q\" {x} \\b"],
            "MAILBOX \"user.john.a \\\"q\\\" \\{x\\} \\\\b\"\n",
        ),
        // flags after the value, and values starting with '-' after "--"
        (&["user.late", "-m"], "MAILBOX user.late\n"),
        (&["-m", "--", "-dash"], "MAILBOX -dash\n"),
    ];
    let mut expected = String::new();
    for (args, line) in cases {
        let out = inst.run(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", stderr(&out));
        expected.push_str(line);
        assert_eq!(inst.read("log"), expected, "{args:?}");
    }
}

#[test]
fn raw_lines_are_written_as_given() {
    let inst = Instance::new("sync_log: 1\n");
    for line in [
        "MAILBOX user.john.100%done",
        "MAILBOX %s%d%n",
        "ANNOTATION \"\"",
        "RENAME \"user.john.Other Stuff\" user.john.Archive\nMAILBOX \"user.john.Other Stuff\"\nMAILBOX user.john.Archive\n",
        "mailbox {9}\r\nuser.john",
        "SEEN john uid1\r\n",
    ] {
        let out = inst.run(&[line]);
        assert_eq!(code(&out), 0, "{line:?}: {}", stderr(&out));
    }
    assert_eq!(
        inst.read("log"),
        "MAILBOX user.john.100%done\n\
         MAILBOX %s%d%n\n\
         ANNOTATION \"\"\n\
         RENAME \"user.john.Other Stuff\" user.john.Archive\n\
         MAILBOX \"user.john.Other Stuff\"\n\
         MAILBOX user.john.Archive\n\
         mailbox {9}\r\nuser.john\n\
         SEEN john uid1\r\n"
    );
}

#[test]
fn invalid_raw_lines_are_refused() {
    let inst = Instance::new("sync_log: 1\n");
    for line in [
        "user.john",
        "ACL user.john",
        "USER  john",
        "USER john extra",
        "SEEN john",
        "MAILBOX \"unterminated",
        "USER a\nbogus line",
        "\n",
        "MAILBOX {20}\r\nshort",
    ] {
        let out = inst.run(&[line]);
        assert_eq!(code(&out), 65, "{line:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not a valid sync_log record"),
            "{line:?}"
        );
    }
    assert!(!inst.log("log").exists());
}

#[test]
fn usage_errors_exit_64() {
    let inst = Instance::new("sync_log: 1\n");
    let cases: &[&[&str]] = &[
        &[],
        &["-u"],
        &["-u", ""],
        &["-u", "a", "b"],
        &["-s", "john"],
        &["-s", "john", ""],
        &["-b", "", "user.john"],
        &["-b", "a", "b", "c"],
        &["-u", "-m", "x"],
        &["-x", "y"],
        &[""],
        &["USER a", "USER b"],
    ];
    for args in cases {
        let out = inst.run(args);
        assert_eq!(code(&out), 64, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("Usage"), "{args:?}: {}", stderr(&out));
    }
    assert!(!inst.log("log").exists());
    let help = cyr_synclog(&["--help"]);
    assert_eq!(code(&help), 0);
    assert!(String::from_utf8_lossy(&help.stdout).contains("-s, --seen"));
}

#[test]
fn line_breaks_in_values_exit_65() {
    let inst = Instance::new("sync_log: 1\n");
    for args in [&["-m", "user.a\nb"][..], &["-s", "john", "u\r1"]] {
        let out = inst.run(args);
        assert_eq!(code(&out), 65, "{args:?}: {}", stderr(&out));
    }
    assert!(!inst.log("log").exists());
}

#[test]
fn nothing_is_written_when_sync_log_is_off() {
    for extra in ["", "sync_log: off\n", "sync_log: no\n"] {
        let inst = Instance::new(extra);
        let out = inst.run(&["-u", "john"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(stderr(&out).contains("sync_log is off"), "{}", stderr(&out));
        assert!(!inst.dir.path().join("conf/sync").exists());
    }
}

#[test]
fn every_configured_channel_is_written() {
    let inst = Instance::new("sync_log: on\nsync_log_channels: \"\" repl1 squatter\n");
    let out = inst.run(&["-m", "user.john"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for sub in ["log", "repl1/log", "squatter/log"] {
        assert_eq!(inst.read(sub), "MAILBOX user.john\n", "{sub}");
    }
    let inst = Instance::new("sync_log: on\nsync_log_channels: repl2\n");
    assert_eq!(code(&inst.run(&["-u", "x"])), 0);
    assert_eq!(inst.read("repl2/log"), "USER x\n");
    assert!(!inst.log("log").exists());
}

#[test]
fn umask_from_the_configuration_applies() {
    let inst = Instance::new("sync_log: 1\numask: 027\n");
    assert_eq!(code(&inst.run(&["-u", "john"])), 0);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&inst.log("log")), 0o640);
    assert_eq!(mode(&inst.dir.path().join("conf/sync")), 0o750);
    // Cyrus's default umask is 077
    let inst = Instance::new("sync_log: 1\nsync_log_channels: repl1\n");
    assert_eq!(code(&inst.run(&["-u", "john"])), 0);
    assert_eq!(mode(&inst.log("repl1/log")), 0o600);
    assert_eq!(mode(&inst.log("repl1")), 0o700);
}

#[test]
fn configuration_errors_exit_78() {
    let out = cyr_synclog(&["-C", "/nonexistent/imapd.conf", "-u", "john"]);
    assert_eq!(code(&out), 78);
    assert!(stderr(&out).contains("/nonexistent/imapd.conf"));

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("imapd.conf");
    for (text, needle) in [
        ("sync_log: 1\n", "configdirectory"),
        ("configdirectory: /x\nsync_log: perhaps\n", "sync_log"),
        (
            "configdirectory: /x\nsync_log: 1\nsync_log_channels: ../x\n",
            "sync_log_channels",
        ),
        (
            "configdirectory: /x\nsync_log: 1\nsync_log: 0\n",
            "already set",
        ),
    ] {
        fs::write(&conf, text).unwrap();
        let out = cyr_synclog(&["-C", conf.to_str().unwrap(), "-u", "john"]);
        assert_eq!(code(&out), 78, "{text:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{text:?}: {}", stderr(&out));
    }
}

#[test]
fn write_failures_exit_74_and_name_the_channel() {
    let inst = Instance::new("sync_log: 1\nsync_log_channels: \"\" broken\n");
    fs::create_dir_all(inst.dir.path().join("conf/sync")).unwrap();
    fs::write(inst.dir.path().join("conf/sync/broken"), b"").unwrap();
    let out = inst.run(&["-u", "john"]);
    assert_eq!(code(&out), 74, "{}", stderr(&out));
    assert!(stderr(&out).contains("channel broken"), "{}", stderr(&out));
    // the other channel was written
    assert_eq!(inst.read("log"), "USER john\n");
}
