//! Codec throughput: `cargo bench -p csync-protocol --bench codec`.
//!
//! Prints, for an `APPLY MAILBOX` of 10,000 records and an `APPLY MESSAGE` of
//! 100 × 50 KB files: encode and decode throughput, heap allocations per record or per
//! byte (counted by a wrapping global allocator), and the process's peak RSS.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use csync_protocol::command::{encode_apply_message_end, encode_apply_message_start};
use csync_protocol::mailbox::Required;
use csync_protocol::{
    Body, Decoder, Encoder, FileHeader, FileSink, Guid, LiteralStyle, MailboxState, Mode, Record,
    SinkError, SystemFlags,
};

struct CountingAlloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

// Counting allocations is the only way to show "no per-byte allocation"; the wrapper
// forwards every call to the system allocator unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `f` repeatedly for about `budget`, returns the best time of one run.
fn best_of(budget: Duration, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut runs = 0;
    while runs < 3 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

fn sample_mailbox(records: u32) -> MailboxState {
    let mut mailbox = MailboxState {
        uniqueid: "c200jgj6thb3ssu8ep4jb0il".into(),
        mboxname: "user.john".into(),
        sync_crc: 755699592,
        sync_crc_annot: Some(3101509256),
        last_uid: records,
        highestmodseq: u64::from(records) + 1,
        recentuid: records,
        recenttime: 1795299501,
        last_appenddate: 1795299501,
        uidvalidity: 1795299501,
        partition: "default".into(),
        acl: "john\tlrswipkxtecdan\t".into(),
        options: "P".into(),
        createdmodseq: 1,
        foldermodseq: 1,
        records: Some(Vec::new()),
        ..MailboxState::default()
    };
    let list = mailbox.records.get_or_insert_with(Vec::new);
    for uid in 1..=records {
        let mut guid = [0u8; 20];
        guid[..4].copy_from_slice(&uid.to_be_bytes());
        let mut system_flags = SystemFlags::empty();
        if uid % 3 == 0 {
            system_flags.insert(SystemFlags::SEEN);
        }
        list.push(Record {
            uid,
            modseq: u64::from(uid) + 1,
            last_updated: 1795299500 + u64::from(uid),
            system_flags,
            user_flags: if uid % 10 == 0 {
                vec!["$Label1".into()]
            } else {
                Vec::new()
            },
            internaldate: 1700000100 + u64::from(uid),
            size: 50_000,
            guid: Guid(guid),
            savedate: 1795299500 + u64::from(uid),
            createdmodseq: u64::from(uid) + 1,
            ..Record::default()
        });
    }
    mailbox
}

/// Copies file bodies into one reused buffer, as a server writing to disk would.
struct CopySink {
    buffer: Vec<u8>,
    bytes: u64,
}

impl FileSink for CopySink {
    fn begin_file(&mut self, _: &FileHeader<'_>) -> Result<(), SinkError> {
        self.buffer.clear();
        Ok(())
    }
    fn file_bytes(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.buffer.extend_from_slice(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }
    fn end_file(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Feeds `input` in socket-sized chunks; returns the number of complete lines.
fn decode_chunks(dec: &mut Decoder, input: &[u8], sink: &mut dyn FileSink, chunk: usize) -> usize {
    let mut lines = 0;
    for piece in input.chunks(chunk) {
        let mut pos = 0;
        while pos < piece.len() {
            let feed = dec.feed(&piece[pos..], sink).expect("decode");
            pos += feed.consumed;
            if feed.complete {
                lines += 1;
            }
        }
    }
    lines
}

fn mb_per_s(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e6
}

fn main() {
    let budget = Duration::from_secs(2);
    const RECORDS: u32 = 10_000;
    let mailbox = sample_mailbox(RECORDS);

    // --- APPLY MAILBOX, 10,000 records ---
    let mut enc = Encoder::new(LiteralStyle::NonSynchronizing);
    let encode_time = best_of(budget, || {
        enc.clear();
        enc.word("APPLY").key("MAILBOX");
        mailbox.encode(&mut enc);
        enc.end_line();
        black_box(enc.bytes());
    });
    let line = enc.bytes().to_vec();
    let before = allocs();
    enc.clear();
    enc.word("APPLY").key("MAILBOX");
    mailbox.encode(&mut enc);
    enc.end_line();
    let encode_allocs = allocs() - before;

    let mut dec = Decoder::new(Mode::Commands);
    let mut sink = CopySink {
        buffer: Vec::new(),
        bytes: 0,
    };
    let dlist_time = best_of(budget, || {
        assert_eq!(decode_chunks(&mut dec, &line, &mut sink, 65536), 1);
    });
    let before = allocs();
    decode_chunks(&mut dec, &line, &mut sink, 65536);
    let dlist_allocs = allocs() - before;

    let typed_time = best_of(budget, || {
        decode_chunks(&mut dec, &line, &mut sink, 65536);
        let Some(Body::Dlist(item)) = dec.line().map(|l| l.body) else {
            panic!("not a dlist");
        };
        let decoded = MailboxState::decode(item, Required::Apply).expect("typed");
        assert_eq!(
            decoded.records.as_ref().map(Vec::len),
            Some(RECORDS as usize)
        );
        black_box(decoded);
    });
    let before = allocs();
    decode_chunks(&mut dec, &line, &mut sink, 65536);
    if let Some(Body::Dlist(item)) = dec.line().map(|l| l.body) {
        black_box(MailboxState::decode(item, Required::Apply).expect("typed"));
    }
    let typed_allocs = allocs() - before;

    let recs = f64::from(RECORDS);
    println!(
        "APPLY MAILBOX, {RECORDS} records, {} bytes on the wire",
        line.len()
    );
    println!(
        "  encode (typed -> bytes):      {:>8.2} ms  {:>10.0} records/s  {:>7.0} MB/s  {:>6} allocations",
        encode_time.as_secs_f64() * 1e3,
        recs / encode_time.as_secs_f64(),
        mb_per_s(line.len(), encode_time),
        encode_allocs
    );
    println!(
        "  decode (bytes -> dlist):      {:>8.2} ms  {:>10.0} records/s  {:>7.0} MB/s  {:>6} allocations (reused decoder)",
        dlist_time.as_secs_f64() * 1e3,
        recs / dlist_time.as_secs_f64(),
        mb_per_s(line.len(), dlist_time),
        dlist_allocs
    );
    println!(
        "  decode (bytes -> typed):      {:>8.2} ms  {:>10.0} records/s  {:>7.0} MB/s  {:>6} allocations ({:.2} per record)",
        typed_time.as_secs_f64() * 1e3,
        recs / typed_time.as_secs_f64(),
        mb_per_s(line.len(), typed_time),
        typed_allocs,
        typed_allocs as f64 / recs
    );

    // --- APPLY MESSAGE, 100 x 50 KB ---
    const FILES: usize = 100;
    const FILE_SIZE: usize = 50 * 1024;
    let bodies: Vec<Vec<u8>> = (0..FILES)
        .map(|i| {
            (0..FILE_SIZE)
                .map(|j| b"abcdefghijklmnopqrstuvwxyz\r\n"[(i + j) % 28])
                .collect()
        })
        .collect();
    let guids: Vec<Guid> = (0..FILES)
        .map(|i| {
            let mut g = [7u8; 20];
            g[0] = i as u8;
            Guid(g)
        })
        .collect();
    let mut enc = Encoder::new(LiteralStyle::NonSynchronizing);
    let write_message = |enc: &mut Encoder| {
        enc.clear();
        encode_apply_message_start(enc);
        for (body, guid) in bodies.iter().zip(&guids) {
            enc.file_header(b"default", guid, body.len() as u32)
                .raw(body);
        }
        encode_apply_message_end(enc);
    };
    write_message(&mut enc);
    let message_encode = best_of(budget, || {
        write_message(&mut enc);
        black_box(enc.bytes());
    });
    let message = enc.bytes().to_vec();
    let payload = FILES * FILE_SIZE;

    let mut dec = Decoder::new(Mode::Commands);
    let mut sink = CopySink {
        buffer: Vec::with_capacity(FILE_SIZE),
        bytes: 0,
    };
    let message_decode = best_of(budget, || {
        assert_eq!(decode_chunks(&mut dec, &message, &mut sink, 65536), 1);
    });
    let before = allocs();
    decode_chunks(&mut dec, &message, &mut sink, 65536);
    let message_allocs = allocs() - before;
    let memcpy = best_of(budget, || {
        for body in &bodies {
            sink.buffer.clear();
            sink.buffer.extend_from_slice(black_box(body));
        }
        black_box(&sink.buffer);
    });

    println!(
        "APPLY MESSAGE, {FILES} files x {FILE_SIZE} bytes, {} bytes on the wire",
        message.len()
    );
    println!(
        "  encode (headers + bodies):    {:>8.2} ms  {:>7.2} GB/s",
        message_encode.as_secs_f64() * 1e3,
        payload as f64 / message_encode.as_secs_f64() / 1e9
    );
    println!(
        "  decode (bodies to a sink):    {:>8.2} ms  {:>7.2} GB/s  {:>6} allocations for {} bytes",
        message_decode.as_secs_f64() * 1e3,
        payload as f64 / message_decode.as_secs_f64() / 1e9,
        message_allocs,
        payload
    );
    println!(
        "  memcpy of the same bodies:    {:>8.2} ms  {:>7.2} GB/s",
        memcpy.as_secs_f64() * 1e3,
        payload as f64 / memcpy.as_secs_f64() / 1e9
    );
    println!("peak RSS: {} KiB", peak_rss_kib());
}
