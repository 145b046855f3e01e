//! Store throughput: `cargo bench -p csync-mailstore --bench store`.
//!
//! (a) lmtpd-style delivery: 10,000 messages of 1–200 KB (log-uniform sizes), each its
//!     own durable transaction through `Store::deliver`;
//! (b) a replica's `APPLY MAILBOX` of 10,000 records of 50 KB in one transaction, the
//!     messages staged first (as `APPLY MESSAGE` leaves them) and hard-linked in;
//! (c) streaming a 1,000,000-record mailbox with `for_each_record` after reopening.
//!
//! Prints messages/s, MB/s (10^6 bytes) and, after each phase, the process's RSS and
//! its peak (VmHWM, reset before each phase through /proc/self/clear_refs). The store
//! lives under the target directory (or `CSYNC_BENCH_DIR`), not on a tmpfs;
//! `CSYNC_BENCH_PHASES=bc` runs only some phases.

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use csync_mailstore::files::{sync_files, write_message};
use csync_mailstore::local::{Flags, new_uniqueid};
use csync_mailstore::{FileSource, Store, StoreConfig};
use csync_protocol::{Guid, MailboxState, Record, SystemFlags};

const DELIVERIES: usize = 10_000;
const APPLY_RECORDS: u32 = 10_000;
const APPLY_SIZE: usize = 50 * 1024;
const BIG_RECORDS: u32 = 1_000_000;
const BUILD_BATCH: u32 = 100_000;

/// SplitMix64, so every run writes the same messages.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Log-uniform in [lo, hi).
    fn log_uniform(&mut self, lo: usize, hi: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (lo as f64 * (hi as f64 / lo as f64).powf(u)) as usize
    }
}

const WORDS: [&str; 48] = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "meeting",
    "report",
    "quarterly",
    "please",
    "attached",
    "review",
    "server",
    "mailbox",
    "replica",
    "thanks",
    "regards",
    "schedule",
    "budget",
    "project",
    "update",
    "tomorrow",
];

/// A plain-text RFC 822 message of exactly `size` bytes (CRLF lines, ≤ 76 columns).
fn rfc822(rng: &mut Rng, n: u64, size: usize, out: &mut Vec<u8>) {
    out.clear();
    let (from, to) = (rng.below(5000), rng.below(5000));
    let day = 1 + rng.below(28);
    let (h, m, s) = (rng.below(24), rng.below(60), rng.below(60));
    write!(
        out,
        "Return-Path: <user{from}@example.org>\r\n\
         Received: from mx{mx}.example.org (mx{mx}.example.org [192.0.2.{mx}])\r\n\
         \tby imap.example.com (Cyrus 3.6.1) with LMTPA;\r\n\
         \t{day} Nov 2023 {h:02}:{m:02}:{s:02} +0000\r\n\
         From: User {from} <user{from}@example.org>\r\n\
         To: User {to} <user{to}@example.com>\r\n\
         Subject: {w1} {w2} {n}\r\n\
         Date: {day} Nov 2023 {h:02}:{m:02}:{s:02} +0000\r\n\
         Message-ID: <{n}.{id:x}@example.org>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\n",
        mx = rng.below(250),
        w1 = WORDS[rng.below(48) as usize],
        w2 = WORDS[rng.below(48) as usize],
        id = rng.next(),
    )
    .expect("writing to memory");
    let mut column = 0;
    while out.len() + 2 < size {
        let word = WORDS[rng.below(48) as usize];
        if column + word.len() >= 76 {
            out.extend_from_slice(if rng.below(8) == 0 {
                b"\r\n\r\n"
            } else {
                b"\r\n"
            });
            column = 0;
        } else if column > 0 {
            out.push(b' ');
            column += 1;
        }
        out.extend_from_slice(word.as_bytes());
        column += word.len();
    }
    out.truncate(size - 2);
    out.extend_from_slice(b"\r\n");
}

/// (VmRSS, VmHWM) in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets VmHWM to the current RSS, so each phase reports its own peak.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn print_rss(phase: &str) {
    let (rss, hwm) = rss_kib();
    println!(
        "    {phase}: RSS {:.1} MiB, peak RSS (VmHWM) {:.1} MiB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}

fn rate(n: f64, t: Duration) -> f64 {
    n / t.as_secs_f64()
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

fn bench_dir() -> tempfile::TempDir {
    let parent = std::env::var_os("CSYNC_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&parent).expect("bench parent directory");
    tempfile::Builder::new()
        .prefix("csync-bench-")
        .tempdir_in(&parent)
        .expect("bench directory")
}

/// (a) Deliveries, each its own transaction (file and directory fsynced, index
/// committed), spread over ten INBOXes.
fn deliver(root: &Path) {
    let mut store = Store::open(StoreConfig::single_dir(root)).expect("open");
    let inboxes: Vec<String> = (0..10).map(|u| format!("user.u{u}")).collect();
    for inbox in &inboxes {
        store.create_mailbox(inbox, None, None).expect("create");
    }
    let mut rng = Rng(1);
    let mut message = Vec::new();
    let (mut bytes, mut spent) = (0u64, Duration::ZERO);
    for n in 0..DELIVERIES {
        let size = rng.log_uniform(1024, 200 * 1024);
        rfc822(&mut rng, n as u64, size, &mut message);
        let t = Instant::now();
        store
            .deliver(&inboxes[n % 10], &message[..], &Flags::default(), None)
            .expect("deliver");
        spent += t.elapsed();
        bytes += size as u64;
    }
    println!(
        "(a) deliver: {DELIVERIES} messages of 1-200 KB (log-uniform), {:.1} MB, one durable \
         transaction each: {:.2} s, {:.0} msg/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        spent.as_secs_f64(),
        rate(DELIVERIES as f64, spent),
        rate(bytes as f64 / 1e6, spent)
    );
}

/// (b) A replica's apply: stage the files (write, hash, fsync), then one transaction
/// that creates the mailbox and links every staged file in.
fn apply(root: &Path) {
    let mut store = Store::open(StoreConfig::single_dir(root)).expect("open");
    let staging = root.join("spool").join("sync.").join("1");
    let mut rng = Rng(2);
    let mut message = Vec::new();
    let t = Instant::now();
    let mut staged = Vec::new();
    let mut paths = Vec::new();
    for n in 0..APPLY_RECORDS {
        rfc822(&mut rng, u64::from(n), APPLY_SIZE, &mut message);
        let path = staging.join(format!("{n}."));
        let (guid, size) = write_message(&path, &message[..]).expect("stage");
        staged.push((guid, size as u32));
        paths.push(path);
    }
    sync_files(&paths, std::slice::from_ref(&staging)).expect("fsync staged files");
    let staging_time = t.elapsed();

    let state = MailboxState {
        uniqueid: new_uniqueid(),
        mboxname: "user.replica".into(),
        uidvalidity: 1_700_000_000,
        partition: "default".into(),
        acl: "replica\tlrswipkxtecdan\t".into(),
        options: "P".into(),
        createdmodseq: 1,
        foldermodseq: 1,
        ..MailboxState::default()
    };
    let t = Instant::now();
    store
        .write(|txn| {
            let mut m = txn.create_mailbox(&state)?;
            for (i, ((guid, size), path)) in staged.iter().zip(&paths).enumerate() {
                let uid = i as u32 + 1;
                let record = Record {
                    uid,
                    modseq: u64::from(uid) + 1,
                    last_updated: 1_700_000_000 + u64::from(uid),
                    system_flags: if uid.is_multiple_of(3) {
                        SystemFlags::SEEN
                    } else {
                        SystemFlags::empty()
                    },
                    internaldate: 1_700_000_000 + u64::from(uid),
                    size: *size,
                    guid: *guid,
                    savedate: 1_700_000_000 + u64::from(uid),
                    createdmodseq: u64::from(uid) + 1,
                    ..Record::default()
                };
                txn.put_record(&m, &record, FileSource::Link(path))?;
            }
            m.state.last_uid = APPLY_RECORDS;
            m.state.highestmodseq = u64::from(APPLY_RECORDS) + 1;
            txn.update_header(&m)
        })
        .expect("apply");
    let apply_time = t.elapsed();
    let mb = f64::from(APPLY_RECORDS) * APPLY_SIZE as f64 / 1e6;
    println!(
        "(b) apply: {APPLY_RECORDS} records of {} KB ({mb:.1} MB); staging (write, hash, \
         fsync): {:.2} s, {:.0} msg/s, {:.1} MB/s",
        APPLY_SIZE / 1024,
        staging_time.as_secs_f64(),
        rate(f64::from(APPLY_RECORDS), staging_time),
        rate(mb, staging_time)
    );
    let per_sec = rate(f64::from(APPLY_RECORDS), apply_time);
    println!(
        "    one transaction (create, {APPLY_RECORDS} x put_record Link, update_header, \
         commit): {:.2} s, {per_sec:.0} msg/s, {:.1} MB/s (target >= 5000 msg/s: {})",
        apply_time.as_secs_f64(),
        rate(mb, apply_time),
        verdict(per_sec >= 5000.0)
    );
    let report = store.verify(Some("user.replica"), false).expect("verify");
    assert!(report.is_clean() && report.records == u64::from(APPLY_RECORDS));
}

/// (c) Builds a mailbox of expunged records without files (batches of transactions,
/// not timed as the result), reopens the store and streams every record.
fn iterate(root: &Path) {
    let mut store = Store::open(StoreConfig::single_dir(root)).expect("open");
    store
        .create_mailbox("user.big", None, None)
        .expect("create");
    let mut rng = Rng(3);
    let t = Instant::now();
    for batch in 0..BIG_RECORDS / BUILD_BATCH {
        store
            .write(|txn| {
                let mut m = txn.mailbox("user.big")?.expect("created");
                for uid in batch * BUILD_BATCH + 1..=(batch + 1) * BUILD_BATCH {
                    let mut guid = [0u8; 20];
                    for chunk in guid.chunks_mut(8) {
                        chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
                    }
                    let record = Record {
                        uid,
                        modseq: u64::from(uid) + 1,
                        last_updated: 1_700_000_000 + u64::from(uid),
                        system_flags: SystemFlags::SEEN | SystemFlags::EXPUNGED,
                        user_flags: if uid.is_multiple_of(10) {
                            vec!["$Label1".into()]
                        } else {
                            Vec::new()
                        },
                        internaldate: 1_700_000_000 + u64::from(uid),
                        size: 1000 + (uid % 50_000),
                        guid: Guid(guid),
                        savedate: 1_700_000_000 + u64::from(uid),
                        createdmodseq: u64::from(uid) + 1,
                        ..Record::default()
                    };
                    txn.put_record(&m, &record, FileSource::Keep)?;
                }
                m.state.last_uid = (batch + 1) * BUILD_BATCH;
                m.state.highestmodseq = u64::from(m.state.last_uid) + 1;
                txn.update_header(&m)
            })
            .expect("build batch");
    }
    let build_time = t.elapsed();
    drop(store);
    print_rss("after building");

    reset_peak();
    let t = Instant::now();
    let store = Store::open(StoreConfig::single_dir(root)).expect("reopen");
    let m = store.real_mailbox("user.big").expect("big mailbox");
    let (mut count, mut check) = (0u64, 0u64);
    store
        .for_each_record(m.id, 0, |r| {
            count += 1;
            check = check.wrapping_add(u64::from(r.record.uid) ^ r.record.modseq);
            black_box(&r);
            Ok(())
        })
        .expect("iterate");
    let iterate_time = t.elapsed();
    assert_eq!(count, u64::from(BIG_RECORDS));
    black_box(check);
    let per_sec = rate(count as f64, iterate_time);
    let (_, hwm) = rss_kib();
    println!(
        "(c) iterate: built {BIG_RECORDS} records in {:.1} s ({} transactions); open + \
         for_each_record: {:.2} s, {:.2} M records/s (target >= 1 M/s: {}), peak RSS {:.1} MiB \
         (target < 64 MiB: {})",
        build_time.as_secs_f64(),
        BIG_RECORDS / BUILD_BATCH,
        iterate_time.as_secs_f64(),
        per_sec / 1e6,
        verdict(per_sec >= 1e6),
        hwm as f64 / 1024.0,
        verdict(hwm < 64 * 1024)
    );
}

/// Median time to write a 4 KB file and fsync it and its directory: what bounds (a),
/// and on a shared machine what explains its spread from one run to the next.
fn fsync_latency(dir: &Path) -> Duration {
    std::fs::create_dir_all(dir).expect("calibration directory");
    let mut times: Vec<Duration> = (0..200)
        .map(|i| {
            let t = Instant::now();
            let path = dir.join(format!("{i}."));
            std::fs::write(&path, [b'x'; 4096]).expect("write");
            sync_files(&[path], &[dir.to_path_buf()]).expect("fsync");
            t.elapsed()
        })
        .collect();
    times.sort();
    let _ = std::fs::remove_dir_all(dir);
    times[times.len() / 2]
}

fn main() {
    let dir = bench_dir();
    println!("store bench in {}", dir.path().display());
    print_rss("at start");
    println!(
        "    fsync calibration: write 4 KB + fsync file + fsync directory, median {:.2} ms",
        fsync_latency(&dir.path().join("calibration")).as_secs_f64() * 1e3
    );
    type Phase = (&'static str, fn(&Path));
    let phases: [Phase; 3] = [("a", deliver), ("b", apply), ("c", iterate)];
    // CSYNC_BENCH_PHASES=c runs only (c), for example.
    let only = std::env::var("CSYNC_BENCH_PHASES").unwrap_or_else(|_| "abc".into());
    for (name, phase) in phases.into_iter().filter(|(n, _)| only.contains(n)) {
        reset_peak();
        let root = dir.path().join(name);
        phase(&root);
        print_rss(&format!("after ({name})"));
        // Free the disk between phases (about 0.4 GB and 1 GB of messages).
        let _ = std::fs::remove_dir_all(&root);
    }
}
