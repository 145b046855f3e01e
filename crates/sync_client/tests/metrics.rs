//! The metrics endpoint during a rolling run shows the lag, the backlog and counts
//! that match what happened.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn wait_for(port: u16, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        if let Some(text) = scrape(port)
            && ok(&text)
        {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}: {:?}",
            scrape(port)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn metrics_show_lag_backlog_and_counts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(
        Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--bins"])
            .current_dir(&root)
            .status()
            .unwrap()
            .success()
    );
    let bin = Path::new(env!("CARGO_BIN_EXE_sync_client"))
        .parent()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let replica_conf = d.join("replica.conf");
    std::fs::write(
        &replica_conf,
        format!(
            "configdirectory: {0}/r/conf\npartition-default: {0}/r/spool\nadmins: repl\n",
            d.display()
        ),
    )
    .unwrap();
    let adm = |conf: &Path, args: &[&str], input: &[u8]| {
        let mut c = Command::new(bin.join("csyncadm"))
            .arg("-C")
            .arg(conf)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input).unwrap();
        assert!(c.wait().unwrap().success(), "csyncadm {args:?}");
    };
    adm(
        &replica_conf,
        &["passwd", "-p", "repl"],
        b"pw-for-metrics\n",
    );
    let replica_port = free_port();
    let start_replica = || {
        Kill(
            Command::new(bin.join("sync_server"))
                .arg("-C")
                .arg(&replica_conf)
                .args(["--listen", &format!("127.0.0.1:{replica_port}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut replica = start_replica();
    let metrics_port = free_port();
    let master_conf = d.join("master.conf");
    std::fs::write(
        &master_conf,
        format!(
            "configdirectory: {0}/m/conf\npartition-default: {0}/m/spool\nsync_log: yes\n\
             sync_host: 127.0.0.1:{replica_port}\nsync_authname: repl\n\
             sync_password: pw-for-metrics\nsync_repeat_interval: 0\n\
             csync_metrics_listen: 127.0.0.1:{metrics_port}\n",
            d.display()
        ),
    )
    .unwrap();
    adm(&master_conf, &["create", "user.ann"], b"");
    for i in 0..5 {
        adm(
            &master_conf,
            &["deliver", "user.ann"],
            format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes(),
        );
    }
    let _client = Kill(
        Command::new(bin.join("sync_client"))
            .arg("-C")
            .arg(&master_conf)
            .arg("-R")
            .env("CSYNC_RECONNECT_INITIAL_MS", "100")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let text = wait_for(metrics_port, "the first run", |t| {
        value(t, "csync_client_runs_total").is_some_and(|v| v >= 1.0)
            && value(t, "csync_client_backlog_records") == Some(0.0)
    });
    assert_eq!(
        value(&text, "csync_client_messages_sent_total"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "csync_client_lag_seconds"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(value(&text, "csync_client_connected"), Some(1.0), "{text}");
    assert!(value(&text, "csync_client_last_success_timestamp_seconds").unwrap() > 1.0e9);

    // The replica goes away: changes pile up, the lag grows.
    drop(replica);
    for i in 5..8 {
        adm(
            &master_conf,
            &["deliver", "user.ann"],
            format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes(),
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    let text = wait_for(metrics_port, "a backlog", |t| {
        value(t, "csync_client_backlog_records").is_some_and(|v| v >= 3.0)
    });
    assert!(
        value(&text, "csync_client_lag_seconds").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "csync_client_backlog_bytes").unwrap() > 0.0,
        "{text}"
    );

    // It comes back: the backlog drains and the counts add up.
    replica = start_replica();
    let text = wait_for(metrics_port, "the backlog to drain", |t| {
        value(t, "csync_client_backlog_records") == Some(0.0)
            && value(t, "csync_client_messages_sent_total") == Some(8.0)
    });
    assert_eq!(
        value(&text, "csync_client_lag_seconds"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "csync_client_quarantined"),
        Some(0.0),
        "{text}"
    );
    drop(replica);
}
