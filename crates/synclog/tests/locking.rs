//! The §6.4 protocol under contention: a classic POSIX record lock held by another
//! process (what Cyrus takes) holds our writers and readers back, and writers in
//! several threads and processes racing a rotating reader lose and duplicate
//! nothing.
//!
//! The other processes are this test binary itself, started with an environment
//! variable that turns one of the `helper_*` tests into the helper (they do nothing
//! in a normal run).

use std::collections::BTreeMap;
use std::env;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use csync_synclog::{Channel, LogReader, SyncLog, SyncLogRecord, append_locked};
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

const LOCK_ENV: &str = "CSYNC_TEST_HOLD_LOCK";
const WRITER_DIR_ENV: &str = "CSYNC_TEST_WRITER_DIR";
const WRITER_ID_ENV: &str = "CSYNC_TEST_WRITER_ID";
const READY: &str = "CSYNC-LOCK-HELD";

/// Helper process: takes a classic (process-owned, as Cyrus's) exclusive fcntl
/// lock on the file named by `CSYNC_TEST_HOLD_LOCK`, says so on stdout, and keeps
/// it until its stdin is closed.
#[test]
fn helper_hold_classic_lock() {
    let Some(path) = env::var_os(LOCK_ENV) else {
        return;
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(&file, FcntlArg::F_SETLKW(&lock)).unwrap();
    println!("{READY}");
    std::io::stdout().flush().unwrap();
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
    // exiting releases the lock
}

/// Helper process: appends `WRITER_COUNT` records through a `SyncLog` on the
/// default channel of `CSYNC_TEST_WRITER_DIR`.
#[test]
fn helper_append_records() {
    let (Some(dir), Ok(id)) = (env::var_os(WRITER_DIR_ENV), env::var(WRITER_ID_ENV)) else {
        return;
    };
    let log = SyncLog::new(PathBuf::from(dir), vec![Channel::Default]);
    for n in 0..WRITER_COUNT {
        log.append(&records(&format!("p{id}"), n)).unwrap();
    }
}

fn helper(test: &str) -> Command {
    let mut cmd = Command::new(env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1", "-q"]);
    cmd
}

/// Starts a process holding a classic lock on `path`; returns once it holds it.
fn hold_lock(path: &Path) -> Child {
    let mut child = helper("helper_hold_classic_lock")
        .env(LOCK_ENV, path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.trim() == READY => break,
            Some(Ok(_)) => continue,
            other => panic!("lock helper died: {other:?}"),
        }
    }
    // keep draining so the helper never blocks on a full pipe
    thread::spawn(move || lines.for_each(drop));
    child
}

fn release(mut child: Child) {
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "lock helper failed: {status}");
}

#[test]
fn append_waits_for_a_classic_lock_held_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync/log");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, "USER before\n").unwrap();
    let holder = hold_lock(&path);

    let (tx, rx) = mpsc::channel();
    let writer = thread::spawn({
        let path = path.clone();
        move || {
            append_locked(&path, b"USER after\n").unwrap();
            tx.send(()).unwrap();
        }
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "append did not wait for the lock"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), "USER before\n");
    release(holder);
    rx.recv_timeout(Duration::from_secs(20))
        .expect("append finished after the lock was released");
    writer.join().unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "USER before\nUSER after\n"
    );
}

#[test]
fn reader_waits_for_a_writer_holding_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let reader = LogReader::for_channel(dir.path(), &Channel::Default);
    fs::create_dir_all(reader.log_path().parent().unwrap()).unwrap();
    fs::write(reader.log_path(), "USER one\n").unwrap();
    // a "writer" that opened and locked the log before the reader renamed it
    let holder = hold_lock(reader.log_path());

    let (tx, rx) = mpsc::channel();
    let begun = thread::spawn({
        let reader = reader.clone();
        move || {
            let run = reader.begin().unwrap().unwrap();
            tx.send(()).unwrap();
            run
        }
    });
    assert!(rx.recv_timeout(Duration::from_millis(700)).is_err());
    // the rename already happened; the writer's record lands in log-run
    assert!(reader.run_path().exists());
    assert!(!reader.log_path().exists());
    OpenOptions::new()
        .append(true)
        .open(reader.run_path())
        .unwrap()
        .write_all(b"USER two\n")
        .unwrap();
    release(holder);
    rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let run = begun.join().unwrap();
    assert_eq!(
        run.records(),
        [SyncLogRecord::user("one"), SyncLogRecord::user("two")]
    );
    run.finish().unwrap();
}

const THREADS: usize = 6;
const THREAD_COUNT: usize = 150;
const PROCESSES: usize = 3;
const WRITER_COUNT: usize = 100;

/// A group of one or three records, unique per writer and number.
fn records(writer: &str, n: usize) -> Vec<SyncLogRecord> {
    if n.is_multiple_of(3) {
        SyncLogRecord::rename_group(
            &format!("user.{writer}.old {n}"),
            &format!("user.{writer}.new{n}"),
        )
        .to_vec()
    } else {
        vec![SyncLogRecord::append(format!("user.{writer}.m{n}"))]
    }
}

#[test]
fn concurrent_writers_and_a_rotating_reader_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reader = LogReader::for_channel(dir.path(), &Channel::Default);
    let done = Arc::new(AtomicBool::new(false));

    let collector = thread::spawn({
        let reader = reader.clone();
        let done = Arc::clone(&done);
        move || {
            let mut seen: Vec<SyncLogRecord> = Vec::new();
            let mut runs = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                match reader.begin().unwrap() {
                    Some(run) => {
                        assert!(run.contents().skipped.is_empty());
                        assert_eq!(run.contents().incomplete_tail, None);
                        seen.extend_from_slice(run.records());
                        run.finish().unwrap();
                        runs += 1;
                    }
                    None if finished => break,
                    None => thread::sleep(Duration::from_millis(2)),
                }
            }
            (seen, runs)
        }
    });

    let processes: Vec<Child> = (0..PROCESSES)
        .map(|id| {
            helper("helper_append_records")
                .env(WRITER_DIR_ENV, dir.path())
                .env(WRITER_ID_ENV, id.to_string())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = SyncLog::new(dir.path(), vec![Channel::Default]);
            thread::spawn(move || {
                for n in 0..THREAD_COUNT {
                    log.append(&records(&format!("t{t}"), n)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for mut child in processes {
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "writer process hangs");
            thread::sleep(Duration::from_millis(10));
        }
        assert!(child.wait().unwrap().success());
    }
    done.store(true, Ordering::SeqCst);
    let (seen, runs) = collector.join().unwrap();

    let mut expected: BTreeMap<SyncLogRecord, usize> = BTreeMap::new();
    let writers = (0..THREADS)
        .map(|t| (format!("t{t}"), THREAD_COUNT))
        .chain((0..PROCESSES).map(|p| (format!("p{p}"), WRITER_COUNT)));
    for (writer, count) in writers {
        for n in 0..count {
            for record in records(&writer, n) {
                *expected.entry(record).or_default() += 1;
            }
        }
    }
    let mut got: BTreeMap<SyncLogRecord, usize> = BTreeMap::new();
    for record in &seen {
        *got.entry(record.clone()).or_default() += 1;
    }
    assert_eq!(got.len(), expected.len(), "records lost or invented");
    assert_eq!(got, expected, "records lost or duplicated");
    // groups stay together: every RENAME is followed by its two MAILBOX lines
    for (i, record) in seen.iter().enumerate() {
        if let SyncLogRecord::Rename { old, new } = record {
            assert_eq!(
                seen[i + 1..i + 3],
                [
                    SyncLogRecord::mailbox(old.clone()),
                    SyncLogRecord::mailbox(new.clone())
                ]
            );
        }
    }
    assert!(runs >= 1);
    eprintln!("{} records in {runs} log runs", seen.len());
}
