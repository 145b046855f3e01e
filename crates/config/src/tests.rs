use std::fs;
use std::path::Path;

use super::*;

fn parse(text: &str) -> Config {
    Config::parse(text, "/test/imapd.conf").expect("parses")
}

fn parse_err(text: &str) -> ConfigError {
    Config::parse(text, "/test/imapd.conf").expect_err("must fail")
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn key_value_comments_and_blank_lines() {
    let c = parse(
        "# Cyrus configuration\n\
         \n\
         configdirectory: /var/lib/cyrus\n\
         \t  partition-default:   /var/spool/cyrus/mail  \n\
         \x20  # indented comment\n\
         admins: cyrus repl   # not a comment: part of the value\n\
         sync_log:1\n",
    );
    assert_eq!(c.string("configdirectory"), Some("/var/lib/cyrus"));
    assert_eq!(c.string("partition-default"), Some("/var/spool/cyrus/mail"));
    assert_eq!(
        c.string("admins"),
        Some("cyrus repl   # not a comment: part of the value")
    );
    assert_eq!(c.switch("sync_log").unwrap(), Some(true));
    assert_eq!(c.string("missing"), None);
    assert_eq!(c.iter().count(), 4);
}

#[test]
fn keys_are_case_insensitive() {
    let c = parse("ConfigDirectory: /a\nSYNC_LOG: on\n");
    assert_eq!(c.string("configdirectory"), Some("/a"));
    assert_eq!(c.string("CONFIGDIRECTORY"), Some("/a"));
    assert_eq!(c.switch("Sync_Log").unwrap(), Some(true));
    // values keep their case
    let c = parse("servername: Mail.Example.COM\n");
    assert_eq!(c.string("servername"), Some("Mail.Example.COM"));
}

#[test]
fn duplicate_keys_are_an_error_as_in_cyrus() {
    match parse_err("sync_log: 1\nfoo: x\nSync_Log: 0\n") {
        ConfigError::DuplicateKey { origin, key, first } => {
            assert_eq!(key, "sync_log");
            assert_eq!(origin.line, 3);
            assert_eq!(first.line, 1);
        }
        other => panic!("unexpected {other:?}"),
    }
    // a service or channel override is a different key, not a duplicate
    let c = parse("sync_host: a\nrepl1_sync_host: b\nimap_sync_host: c\n");
    assert_eq!(c.string("sync_host"), Some("a"));
}

#[test]
fn line_continuation() {
    let c = parse("admins: alice \\\n  bob\nnext: 1\n");
    assert_eq!(c.string("admins"), Some("alice   bob"));
    assert_eq!(c.string("next"), Some("1"));
    // the key itself may be split, and no blank is inserted
    let c = parse("sync_\\\nhost: replica\n");
    assert_eq!(c.string("sync_host"), Some("replica"));
    // a comment ending in a backslash swallows the next line, as in Cyrus
    let c = parse("# comment \\\nhidden: 1\nshown: 2\n");
    assert_eq!(c.string("hidden"), None);
    assert_eq!(c.string("shown"), Some("2"));
    // errors point at the line the value starts on
    match parse_err("a: 1\nb\\\nc\\\nd\n") {
        ConfigError::InvalidKey { origin } => assert_eq!(origin.line, 2),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn crlf_and_missing_final_newline() {
    let c = parse("a: 1\r\nb: two words \r\nc: 3");
    assert_eq!(c.string("a"), Some("1"));
    assert_eq!(c.string("b"), Some("two words"));
    assert_eq!(c.string("c"), Some("3"));
}

#[test]
fn syntax_errors_name_file_and_line() {
    let cases: [(&str, usize); 6] = [
        ("a: 1\nkey value\n", 2),
        ("key : value\n", 1),
        ("bad.key: 1\n", 1),
        (": value\n", 1),
        ("@: value\n", 1),
        ("\n\n  ké: 1\n", 3),
    ];
    for (text, line) in cases {
        match parse_err(text) {
            ConfigError::InvalidKey { origin } => {
                assert_eq!(origin.line, line, "{text:?}");
                assert_eq!(origin.file, Path::new("/test/imapd.conf"));
            }
            other => panic!("{text:?}: unexpected {other:?}"),
        }
    }
    match parse_err("a: 1\nempty:   \n") {
        ConfigError::EmptyValue { origin, key } => {
            assert_eq!((origin.line, key.as_str()), (2, "empty"));
        }
        other => panic!("unexpected {other:?}"),
    }
    match parse_err("@import: x\n") {
        ConfigError::InvalidDirective { directive, .. } => assert_eq!(directive, "@import"),
        other => panic!("unexpected {other:?}"),
    }
    let err = parse_err("x: 1\ny:\n");
    assert_eq!(err.to_string(), "/test/imapd.conf:2: empty value for y");
}

#[test]
fn non_utf8_value_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imapd.conf");
    fs::write(&path, b"# caf\xe9 comments are fine\nname: caf\xe9\n").unwrap();
    match Config::from_file(&path).unwrap_err() {
        ConfigError::NotUtf8 { origin, key } => {
            assert_eq!((origin.line, key.as_str()), (2, "name"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn include_is_relative_to_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "etc/imapd.conf",
        "configdirectory: /var/lib/cyrus\n@include: conf.d/sync.conf\nafter: 1\n",
    );
    write(
        dir.path(),
        "etc/conf.d/sync.conf",
        "sync_log: yes\n@INCLUDE: ../../shared/partitions.conf\n",
    );
    let shared = write(
        dir.path(),
        "shared/partitions.conf",
        "partition-default: /srv/mail\n",
    );
    let c = Config::from_file(&main).unwrap();
    assert_eq!(c.switch("sync_log").unwrap(), Some(true));
    assert_eq!(c.partition("default"), Some(Path::new("/srv/mail")));
    assert_eq!(c.string("after"), Some("1"));
    assert_eq!(c.path(), main);
    let origin = c.origin("partition-default").unwrap();
    assert_eq!(origin.line, 1);
    assert_eq!(
        fs::canonicalize(&origin.file).unwrap(),
        fs::canonicalize(&shared).unwrap()
    );
    // absolute include paths work too
    let abs = write(
        dir.path(),
        "abs.conf",
        &format!("@include: {}\n", shared.display()),
    );
    let c = Config::from_file(&abs).unwrap();
    assert_eq!(c.partition("default"), Some(Path::new("/srv/mail")));
}

#[test]
fn include_loops_and_repeats_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.conf", "a: 1\n@include: b.conf\n");
    write(dir.path(), "b.conf", "b: 1\n@include: ./a.conf\n");
    match Config::from_file(&a).unwrap_err() {
        ConfigError::IncludeLoop { origin, path } => {
            assert!(origin.file.ends_with("b.conf"));
            assert_eq!(origin.line, 2);
            assert!(path.ends_with("a.conf"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let me = write(dir.path(), "self.conf", "@include: self.conf\n");
    assert!(matches!(
        Config::from_file(&me).unwrap_err(),
        ConfigError::IncludeLoop { .. }
    ));
    // the same file twice (not a loop) is refused, as Cyrus does
    let twice = write(
        dir.path(),
        "twice.conf",
        "@include: empty.conf\n@include: empty.conf\n",
    );
    write(dir.path(), "empty.conf", "# nothing\n");
    match Config::from_file(&twice).unwrap_err() {
        ConfigError::IncludedTwice { origin, .. } => assert_eq!(origin.line, 2),
        other => panic!("unexpected {other:?}"),
    }
    // a missing include names the including line
    let missing = write(dir.path(), "missing.conf", "x: 1\n@include: nope.conf\n");
    match Config::from_file(&missing).unwrap_err() {
        ConfigError::Include { origin, path, .. } => {
            assert_eq!(origin.line, 2);
            assert!(path.ends_with("nope.conf"));
        }
        other => panic!("unexpected {other:?}"),
    }
    // a key set in an included file and again later is a duplicate
    let dup = write(dir.path(), "dup.conf", "@include: inc.conf\nk: 2\n");
    write(dir.path(), "inc.conf", "k: 1\n");
    match Config::from_file(&dup).unwrap_err() {
        ConfigError::DuplicateKey { first, origin, .. } => {
            assert!(first.file.ends_with("inc.conf"));
            assert!(origin.file.ends_with("dup.conf"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn missing_main_file() {
    let err = Config::from_file("/nonexistent/csync/imapd.conf").unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/csync/imapd.conf"));
}

#[test]
fn typed_getters_report_bad_values_with_location() {
    let c = parse(
        "sync_log: Yes\nmaxword: 0x20\nbad_int: 12k\n\
         sync_timeout: 30m\nsync_repeat_interval: 5\nbad_duration: 5 m\n",
    );
    match c.switch("sync_log").unwrap_err() {
        ConfigError::InvalidValue {
            origin,
            key,
            value,
            expected,
        } => {
            assert_eq!(origin.line, 1);
            assert_eq!(key, "sync_log");
            assert_eq!(value, "Yes");
            assert_eq!(expected, ValueKind::Switch);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(c.int("maxword").unwrap(), Some(32));
    assert!(matches!(
        c.int("bad_int"),
        Err(ConfigError::InvalidValue {
            expected: ValueKind::Integer,
            ..
        })
    ));
    assert_eq!(c.int("unset").unwrap(), None);
    assert_eq!(
        c.duration("sync_timeout", DurationUnit::Seconds).unwrap(),
        Some(1800)
    );
    assert_eq!(
        c.duration("sync_repeat_interval", DurationUnit::Seconds)
            .unwrap(),
        Some(5)
    );
    assert_eq!(
        c.duration("sync_repeat_interval", DurationUnit::Minutes)
            .unwrap(),
        Some(300)
    );
    let err = c
        .duration("bad_duration", DurationUnit::Seconds)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/test/imapd.conf:6: invalid value '5 m' for bad_duration: \
         expected a duration (e.g. 30, 20m, 1h30m)"
    );
    assert!(c.switch_or("sync_log_chain", false).is_ok_and(|v| !v));
}

#[test]
fn require_and_config_directory() {
    let c = parse("configdirectory: /var/lib/cyrus\n");
    assert_eq!(c.config_directory().unwrap(), Path::new("/var/lib/cyrus"));
    let c = parse("sync_log: 1\n");
    match c.config_directory().unwrap_err() {
        ConfigError::Missing { key, file } => {
            assert_eq!(key, "configdirectory");
            assert_eq!(file, Path::new("/test/imapd.conf"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn partitions_map_names_to_paths() {
    let c = parse(
        "partition-default: /srv/a\nPartition-Archive2: /srv/b\n\
         partitionx: no\nmetapartition-default: /meta\ndefaultpartition: Default\n",
    );
    let parts = c.partitions();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts["default"], Path::new("/srv/a"));
    assert_eq!(parts["archive2"], Path::new("/srv/b"));
    assert_eq!(c.partition("ARCHIVE2"), Some(Path::new("/srv/b")));
    assert_eq!(c.partition("nope"), None);
    assert_eq!(c.default_partition().as_deref(), Some("default"));
}

#[test]
fn channel_prefixed_lookups_fall_back() {
    let c = parse(
        "sync_host: main.example\nsync_port: 2005\n\
         repl1_sync_host: r1.example\nREPL2_SYNC_HOST: r2.example\n\
         repl1_sync_try_imap: no\nsync_try_imap: yes\n\
         repl1_sync_repeat_interval: 3m\n",
    );
    assert_eq!(c.channel("repl1").string("sync_host"), Some("r1.example"));
    assert_eq!(c.channel("Repl2").string("sync_host"), Some("r2.example"));
    assert_eq!(c.channel("repl3").string("sync_host"), Some("main.example"));
    assert_eq!(c.channel("repl1").string("sync_port"), Some("2005"));
    assert_eq!(c.channel(None).string("sync_host"), Some("main.example"));
    assert_eq!(
        c.channel("repl1").switch("sync_try_imap").unwrap(),
        Some(false)
    );
    assert_eq!(
        c.channel("repl2").switch("sync_try_imap").unwrap(),
        Some(true)
    );
    assert_eq!(
        c.channel("repl1")
            .duration("sync_repeat_interval", DurationUnit::Seconds)
            .unwrap(),
        Some(180)
    );
    assert_eq!(
        c.channel("repl1").resolved_key("sync_host").as_deref(),
        Some("repl1_sync_host")
    );
    assert_eq!(
        c.channel("repl1").origin("sync_host").map(|o| o.line),
        Some(3)
    );
    assert_eq!(c.channel("repl1").string("sync_authname"), None);
}

#[test]
fn service_prefixed_lookups_fall_back() {
    let c = parse(
        "sync_log: 1\nlmtp_sync_log: 0\nsync_client_repl1_sync_host: special\n\
         repl1_sync_host: r1\nsync_client_sync_host: sc\nsync_host: plain\n",
    );
    assert_eq!(c.service("lmtp").switch("sync_log").unwrap(), Some(false));
    assert_eq!(c.service("imap").switch("sync_log").unwrap(), Some(true));
    // the full order: service+channel, channel, service, plain
    let sc = c.service("sync_client");
    assert_eq!(sc.channel("repl1").string("sync_host"), Some("special"));
    assert_eq!(sc.string("sync_host"), Some("sc"));
    assert_eq!(c.channel("repl1").string("sync_host"), Some("r1"));
    assert_eq!(
        c.service("sync_server")
            .channel("repl1")
            .string("sync_host"),
        Some("r1")
    );
    assert_eq!(c.service("other").string("sync_host"), Some("plain"));
}

#[test]
fn sync_log_channels_parsing() {
    assert_eq!(
        parse("x: 1\n").sync_log_channels().unwrap(),
        vec![Channel::Default]
    );
    assert_eq!(
        parse("sync_log_channels: repl1 squatter\n")
            .sync_log_channels()
            .unwrap(),
        vec![
            Channel::Named("repl1".into()),
            Channel::Named("squatter".into())
        ]
    );
    // "" is the default channel; repeated blanks separate like one; repeats collapse
    assert_eq!(
        parse("sync_log_channels: \"\"  repl1 \"\" repl1\n")
            .sync_log_channels()
            .unwrap(),
        vec![Channel::Default, Channel::Named("repl1".into())]
    );
    for bad in ["../etc", "a/b", ".", "..", "a\tb"] {
        let c = parse(&format!("sync_log_channels: repl1 {bad}\n"));
        match c.sync_log_channels().unwrap_err() {
            ConfigError::InvalidValue {
                value, expected, ..
            } => {
                assert_eq!(value, bad);
                assert_eq!(expected, ValueKind::ChannelList);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        parse("sync_log_unsuppressable_channels: squatter \"\"\n")
            .channel_list("sync_log_unsuppressable_channels")
            .unwrap(),
        Some(vec![Channel::Named("squatter".into()), Channel::Default])
    );
    assert_eq!(parse("x: 1\n").channel_list("nope").unwrap(), None);
}

#[test]
fn channel_names_and_display() {
    assert_eq!(Channel::Default.to_string(), "\"\"");
    assert_eq!(Channel::named("repl1").unwrap().to_string(), "repl1");
    assert_eq!(Channel::named("repl1").unwrap().name(), Some("repl1"));
    assert_eq!(Channel::Default.name(), None);
    assert!(Channel::named("").is_err());
    assert!(Channel::named("a b").is_err());
}
