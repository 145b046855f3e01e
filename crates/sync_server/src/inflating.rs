//! Reading and inflating a compressed connection's input in a task of its own.
//!
//! While a compressed full sync streams in, inflate is about a third of the
//! replica's CPU, and the session spends much of its time away from the socket:
//! waiting on the fsyncs of an `APPLY MAILBOX` commit, or writing staged files. A
//! task that reads and inflates on its own keeps doing so meanwhile, on the other
//! core, so the plaintext of the next upload is ready when the session comes back,
//! and the client is not held up by a full socket.
//!
//! The task runs ahead by at most [`MAX_AHEAD`] chunks (one socket read each) plus the
//! one it holds, which bounds the memory; it is aborted when its [`CompressedReader`]
//! is dropped.

use std::sync::{Arc, Mutex};

use csync_protocol::compress::Inflater;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Socket reads inflated ahead of the session: with 64 KiB reads, at most 1 MiB of
/// compressed input and the plaintext it inflates to.
pub const MAX_AHEAD: usize = 16;

/// Bytes asked of the socket per read.
const READ_BYTES: usize = 64 * 1024;

/// What the task hands the session, in order.
#[derive(Debug)]
pub enum Chunk {
    /// Plaintext (maybe empty) and the number of compressed bytes it came from.
    Plain(Vec<u8>, usize),
    Eof,
    Failed(ReadFailure),
}

#[derive(Debug)]
pub enum ReadFailure {
    Io(std::io::Error),
    Inflate(String),
}

/// Emptied plaintext buffers on their way back to the task: a fresh buffer this
/// size would be a new mapping, faulted in page by page as inflate fills it.
type Spare = Arc<Mutex<Vec<Vec<u8>>>>;

/// The session's end of the reading task.
pub struct CompressedReader {
    chunks: mpsc::Receiver<Chunk>,
    task: JoinHandle<()>,
    spare: Spare,
}

impl std::fmt::Debug for CompressedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressedReader").finish_non_exhaustive()
    }
}

impl CompressedReader {
    /// Starts reading `reader`; `leftover` is compressed input already read from it
    /// (after the COMPRESS line), inflated first.
    pub fn start<R>(mut reader: R, leftover: Vec<u8>) -> CompressedReader
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let (tx, chunks) = mpsc::channel(MAX_AHEAD);
        let spare = Spare::default();
        let task_spare = spare.clone();
        let task = tokio::spawn(async move {
            let mut inflater = Inflater::new();
            let mut raw = vec![0u8; READ_BYTES];
            let mut pending = Some(leftover);
            loop {
                let plain = || {
                    let spare = task_spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    spare.unwrap_or_default()
                };
                let chunk = match pending.take() {
                    Some(bytes) => inflate(&mut inflater, &bytes, plain()),
                    None => match reader.read(&mut raw).await {
                        Ok(0) => Chunk::Eof,
                        Ok(n) => inflate(&mut inflater, &raw[..n], plain()),
                        Err(e) => Chunk::Failed(ReadFailure::Io(e)),
                    },
                };
                let last = !matches!(chunk, Chunk::Plain(..));
                // Waits while MAX_AHEAD chunks are queued.
                if tx.send(chunk).await.is_err() || last {
                    return;
                }
            }
        });
        CompressedReader {
            chunks,
            task,
            spare,
        }
    }

    /// The next chunk; `None` only if the task is gone without saying why.
    pub async fn next(&mut self) -> Option<Chunk> {
        self.chunks.recv().await
    }

    /// Hands a plaintext buffer the session is done with back to the task; as many
    /// as can be in flight are kept.
    pub fn recycle(&self, mut buffer: Vec<u8>) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < MAX_AHEAD + 2 {
            buffer.clear();
            spare.push(buffer);
        }
    }
}

impl Drop for CompressedReader {
    fn drop(&mut self) {
        // The task may be blocked reading a silent peer; it must not keep the socket.
        self.task.abort();
    }
}

fn inflate(inflater: &mut Inflater, compressed: &[u8], mut plain: Vec<u8>) -> Chunk {
    plain.reserve(compressed.len() * 3);
    match inflater.decompress(compressed, &mut plain) {
        Ok(()) => Chunk::Plain(plain, compressed.len()),
        Err(e) => Chunk::Failed(ReadFailure::Inflate(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csync_protocol::compress::Deflater;
    use tokio::io::AsyncWriteExt;

    fn text() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| format!("line {i} of a message\r\n").into_bytes())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leftover_then_socket_bytes_come_out_as_one_stream() {
        let plain = text();
        let mut wire = Vec::new();
        let mut deflater = Deflater::new(1);
        for part in plain.chunks(70_000) {
            deflater.compress(part, &mut wire).unwrap();
        }
        let (mut client, server) = tokio::io::duplex(8 * 1024);
        let (leftover, rest) = wire.split_at(1000);
        let rest = rest.to_vec();
        let writer = tokio::spawn(async move {
            for part in rest.chunks(3_000) {
                client.write_all(part).await.unwrap();
            }
        });
        let mut reader = CompressedReader::start(server, leftover.to_vec());
        let mut out = Vec::new();
        let mut compressed = 0;
        loop {
            match reader.next().await.unwrap() {
                Chunk::Plain(p, n) => {
                    out.extend(p);
                    compressed += n;
                }
                Chunk::Eof => break,
                Chunk::Failed(e) => panic!("{e:?}"),
            }
        }
        writer.await.unwrap();
        assert_eq!(compressed, wire.len());
        assert!(out == plain, "inflated bytes differ");
    }

    #[tokio::test]
    async fn corrupt_input_is_reported() {
        let (_client, server) = tokio::io::duplex(64);
        // A block type of 3 is invalid DEFLATE.
        let mut reader = CompressedReader::start(server, vec![0xff, 0xff, 0xff, 0xff]);
        let chunk = reader.next().await.unwrap();
        assert!(
            matches!(chunk, Chunk::Failed(ReadFailure::Inflate(_))),
            "{chunk:?}"
        );
    }

    #[tokio::test]
    async fn it_reads_ahead_only_a_bounded_amount() {
        let plain = text();
        let mut wire = Vec::new();
        Deflater::new(1).compress(&plain, &mut wire).unwrap();
        assert!(wire.len() > (MAX_AHEAD + 4) * 1000);
        let (mut client, server) = tokio::io::duplex(1000);
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&wire).await;
        });
        let mut reader = CompressedReader::start(server, Vec::new());
        // Nobody takes chunks: the task stops after MAX_AHEAD reads of at most 1000
        // bytes each, so the writer cannot finish.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            !writer.is_finished(),
            "the reader did not stop reading ahead"
        );
        assert_eq!(reader.chunks.len(), MAX_AHEAD);
        // Taking them lets it go on to the end.
        let mut taken = 0;
        while let Some(Chunk::Plain(..)) = reader.next().await {
            taken += 1;
        }
        assert!(writer.is_finished());
        assert!(taken > MAX_AHEAD);
    }
}
