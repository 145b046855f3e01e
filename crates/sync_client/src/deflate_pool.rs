//! Compressing `APPLY MESSAGE` uploads on several cores at once.
//!
//! Deflate at level 1 runs at about 80–180 MB/s per core on mail text, which is slower
//! than a replica can store messages, so one compressing thread would set the pace
//! of a full sync. The upload's plain bytes are cut into segments that a pool of
//! threads compresses independently ([`SegmentDeflater`]: each primed with the 32 KiB
//! before it); the connection writes the results in order, so the replica reads one
//! ordinary DEFLATE stream.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread::JoinHandle;

use csync_protocol::compress::{SegmentDeflater, WINDOW, slide_window};

/// Plain bytes per segment: large enough that priming each job with 32 KiB of
/// history and resetting the compressor for it cost little (at 256 KiB that was
/// 6 % of the client's instructions in a full sync, at 512 KiB 3 %).
pub const SEGMENT_BYTES: usize = 512 * 1024;

struct Job {
    seq: u64,
    history: Vec<u8>,
    plain: Vec<u8>,
    /// An empty buffer to compress into.
    out: Vec<u8>,
}

struct Done {
    seq: u64,
    compressed: Result<Vec<u8>, String>,
    /// The job's plain buffer, handed back for reuse.
    plain: Vec<u8>,
}

/// Worker threads that deflate segments; one per connection, idle between uploads.
pub struct DeflatePool {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    /// Buffers of finished jobs, kept for the next ones across uploads: fresh
    /// buffers this size would each be a new mapping, faulted in page by page.
    spare: Vec<Vec<u8>>,
}

impl DeflatePool {
    /// `threads` workers (at least 2; fewer gains nothing over the connection's own
    /// deflater) compressing at `level`.
    pub fn new(threads: usize, level: u32) -> std::io::Result<Self> {
        let threads = threads.max(2);
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let (done_tx, done) = mpsc::channel::<Done>();
        let mut workers = Vec::with_capacity(threads);
        for n in 0..threads {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            let worker = std::thread::Builder::new()
                .name(format!("deflate-{n}"))
                .spawn(move || {
                    let mut deflater = SegmentDeflater::new(level);
                    loop {
                        let job = {
                            let rx = job_rx.lock().unwrap_or_else(|e| e.into_inner());
                            rx.recv()
                        };
                        let Ok(job) = job else { return };
                        let mut out = job.out;
                        out.clear();
                        out.reserve(job.plain.len() / 2 + 1024);
                        let compressed = deflater
                            .compress(&job.history, &job.plain, &mut out)
                            .map(|()| out)
                            .map_err(|e| e.to_string());
                        let done = Done {
                            seq: job.seq,
                            compressed,
                            plain: job.plain,
                        };
                        if done_tx.send(done).is_err() {
                            return;
                        }
                    }
                })?;
            workers.push(worker);
        }
        Ok(DeflatePool {
            jobs: Some(jobs),
            done,
            workers,
            threads,
            spare: Vec::new(),
        })
    }

    /// One upload's worth of segments, written in order through `write`.
    pub fn upload(&mut self) -> Upload<'_> {
        let pending = self.segment_buffer();
        Upload {
            pool: self,
            pending,
            history: Vec::with_capacity(WINDOW),
            next_seq: 0,
            next_write: 0,
            in_flight: 0,
            ready: BTreeMap::new(),
            plain_bytes: 0,
        }
    }

    /// An empty buffer, reused when one is spare.
    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// An empty buffer with room for a whole segment.
    fn segment_buffer(&mut self) -> Vec<u8> {
        let mut buffer = self.buffer();
        buffer.reserve(SEGMENT_BYTES);
        buffer
    }

    /// Keeps an emptied buffer for later jobs; as many as are in flight at most
    /// (the plain text and the output of each).
    fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.spare.len() < 4 * self.threads {
            buffer.clear();
            self.spare.push(buffer);
        }
    }
}

impl std::fmt::Debug for DeflatePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflatePool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl Drop for DeflatePool {
    fn drop(&mut self) {
        // Closing the job channel ends every worker.
        self.jobs.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// The segments of one upload in flight. Every segment submitted is written (by
/// [`Upload::finish`]) or, when the upload is abandoned, collected and dropped, so
/// the pool is clean for the next one.
pub struct Upload<'p> {
    pool: &'p mut DeflatePool,
    pending: Vec<u8>,
    /// The last 32 KiB of plain text submitted so far.
    history: Vec<u8>,
    next_seq: u64,
    next_write: u64,
    in_flight: usize,
    ready: BTreeMap<u64, Vec<u8>>,
    plain_bytes: u64,
}

/// Why an upload could not be compressed or written.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("compressing the upload: {0}")]
    Compress(String),
    #[error("the compression threads stopped")]
    PoolGone,
    #[error(transparent)]
    Write(#[from] std::io::Error),
}

impl std::fmt::Debug for Upload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("submitted", &self.next_seq)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl Upload<'_> {
    /// Adds plain bytes; full segments go to the workers, and finished ones in order
    /// to `write`.
    pub fn put(
        &mut self,
        mut bytes: &[u8],
        write: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), UploadError> {
        while !bytes.is_empty() {
            let room = SEGMENT_BYTES - self.pending.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.pending.extend_from_slice(now);
            bytes = later;
            if self.pending.len() == SEGMENT_BYTES {
                self.submit(write)?;
            }
        }
        Ok(())
    }

    /// Compresses what is left, writes everything in order and returns the plain
    /// text of the upload's last 32 KiB (the connection's own deflater continues
    /// from there) and the number of plain bytes.
    pub fn finish(
        mut self,
        write: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(Vec<u8>, u64), UploadError> {
        if !self.pending.is_empty() {
            self.submit(write)?;
        }
        while self.in_flight > 0 {
            self.collect_one(write)?;
        }
        Ok((std::mem::take(&mut self.history), self.plain_bytes))
    }

    fn submit(
        &mut self,
        write: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), UploadError> {
        let fresh = self.pool.segment_buffer();
        let plain = std::mem::replace(&mut self.pending, fresh);
        let job = Job {
            seq: self.next_seq,
            history: self.history.clone(),
            plain,
            out: self.pool.buffer(),
        };
        self.plain_bytes += job.plain.len() as u64;
        slide_window(&mut self.history, &job.plain);
        self.pool
            .jobs
            .as_ref()
            .ok_or(UploadError::PoolGone)?
            .send(job)
            .map_err(|_| UploadError::PoolGone)?;
        self.next_seq += 1;
        self.in_flight += 1;
        // Two segments per worker between submission and write keeps every worker
        // busy while the results wait for their turn, and bounds memory even when
        // one worker falls behind the others.
        while self.next_seq - self.next_write >= 2 * self.pool.threads as u64 {
            self.collect_one(write)?;
        }
        Ok(())
    }

    /// Waits for one finished segment, then writes every segment that is next in
    /// order.
    fn collect_one(
        &mut self,
        write: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), UploadError> {
        let done = self.pool.done.recv().map_err(|_| UploadError::PoolGone)?;
        self.in_flight -= 1;
        self.pool.recycle(done.plain);
        self.ready
            .insert(done.seq, done.compressed.map_err(UploadError::Compress)?);
        while let Some(out) = self.ready.remove(&self.next_write) {
            let written = write(&out);
            self.pool.recycle(out);
            written?;
            self.next_write += 1;
        }
        Ok(())
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        // An abandoned upload (an error on the way): collect what the workers still
        // hold so the next upload does not receive it.
        while self.in_flight > 0 {
            let Ok(done) = self.pool.done.recv() else {
                break;
            };
            self.in_flight -= 1;
            self.pool.recycle(done.plain);
            if let Ok(out) = done.compressed {
                self.pool.recycle(out);
            }
        }
        for (_, out) in std::mem::take(&mut self.ready) {
            self.pool.recycle(out);
        }
        let pending = std::mem::take(&mut self.pending);
        self.pool.recycle(pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csync_protocol::compress::{Deflater, Inflater};

    fn text(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word = ["mailbox ", "uid ", "modseq ", "flag\r\n", "guid "][(x % 5) as usize];
            out.extend_from_slice(word.as_bytes());
            if x.is_multiple_of(7) {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }

    /// Uploads through the pool between ordinary deflater output decode as one
    /// stream, whatever order the workers finish in.
    #[test]
    fn pooled_uploads_continue_the_connection_stream() {
        let mut pool = DeflatePool::new(3, 1).unwrap();
        let mut deflater = Deflater::new(1);
        let mut wire = Vec::new();
        let mut plain = Vec::new();
        for round in 0..4u64 {
            let command = text(300 + round as usize * 50, round);
            deflater.compress(&command, &mut wire).unwrap();
            plain.extend_from_slice(&command);
            let mut upload = pool.upload();
            let mut write = |bytes: &[u8]| -> std::io::Result<()> {
                wire.extend_from_slice(bytes);
                Ok(())
            };
            let mut sent = 0usize;
            for piece in 0..40u64 {
                let body = text(
                    1 + (piece as usize * 7919 + round as usize * 104_729) % 90_000,
                    piece,
                );
                upload.put(&body, &mut write).unwrap();
                plain.extend_from_slice(&body);
                sent += body.len();
            }
            let (history, bytes) = upload.finish(&mut write).unwrap();
            assert_eq!(bytes, sent as u64);
            assert_eq!(history[..], plain[plain.len() - WINDOW..]);
            deflater.continue_after(&history);
        }
        let tail = text(5000, 99);
        deflater.compress(&tail, &mut wire).unwrap();
        plain.extend_from_slice(&tail);
        let mut inflater = Inflater::new();
        let mut decoded = Vec::new();
        for chunk in wire.chunks(1000) {
            inflater.decompress(chunk, &mut decoded).unwrap();
        }
        assert!(decoded == plain, "the stream decodes to what was sent");
        assert!(
            wire.len() < plain.len() / 2,
            "{} of {}",
            wire.len(),
            plain.len()
        );
    }

    /// A write error ends the upload; the next upload on the pool is unaffected.
    #[test]
    fn an_abandoned_upload_leaves_the_pool_clean() {
        let mut pool = DeflatePool::new(2, 1).unwrap();
        {
            let mut upload = pool.upload();
            let mut failing = |_: &[u8]| -> std::io::Result<()> {
                Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "gone"))
            };
            let body = text(5 * SEGMENT_BYTES, 1);
            assert!(matches!(
                upload.put(&body, &mut failing),
                Err(UploadError::Write(_))
            ));
        }
        let mut wire = Vec::new();
        let mut upload = pool.upload();
        let body = text(3 * SEGMENT_BYTES + 17, 2);
        let mut write = |bytes: &[u8]| -> std::io::Result<()> {
            wire.extend_from_slice(bytes);
            Ok(())
        };
        upload.put(&body, &mut write).unwrap();
        upload.finish(&mut write).unwrap();
        let mut decoded = Vec::new();
        Inflater::new().decompress(&wire, &mut decoded).unwrap();
        assert!(decoded == body);
    }
}
