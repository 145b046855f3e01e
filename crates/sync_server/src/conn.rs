//! One connection's byte pipe: TCP, optionally TLS after STARTTLS, optionally raw
//! DEFLATE after COMPRESS (spec §1.5, §1.7). Lines go in and out through the sans-IO
//! protocol crate; this only moves bytes, with the read timeout of `sync_timeout`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use csync_protocol::compress::Deflater;
use csync_protocol::decode::{Decoder, FileSink};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::inflating::{Chunk, CompressedReader, ReadFailure};

/// A byte stream either way: TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// TCP or TLS.
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Momentarily empty while STARTTLS swaps the stream.
    Swapping,
    /// After COMPRESS: the read half belongs to a [`CompressedReader`].
    Compressed(tokio::io::WriteHalf<Box<dyn Stream>>),
}

impl Transport {
    fn as_read(&mut self) -> Option<Pin<&mut (dyn AsyncRead + Unpin + Send)>> {
        match self {
            Transport::Plain(s) => Some(Pin::new(s)),
            Transport::Tls(s) => Some(Pin::new(s.as_mut())),
            Transport::Swapping | Transport::Compressed(_) => None,
        }
    }

    fn as_write(&mut self) -> Option<Pin<&mut (dyn AsyncWrite + Unpin + Send)>> {
        match self {
            Transport::Plain(s) => Some(Pin::new(s)),
            Transport::Tls(s) => Some(Pin::new(s.as_mut())),
            Transport::Compressed(w) => Some(Pin::new(w)),
            Transport::Swapping => None,
        }
    }
}

fn swapping() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection is being upgraded")
}

/// What reading a line produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Line,
    /// The line is not complete, but a batch of its RECORD items is ready in the
    /// decoder ([`csync_protocol::Feed::records`]); read on after taking it.
    Records,
    Eof,
    Timeout,
}

/// Buffered, possibly compressed, possibly TLS connection.
pub struct Conn {
    transport: Transport,
    /// Set once COMPRESS is active.
    inflater: Option<CompressedReader>,
    tls: bool,
    deflater: Option<Deflater>,
    raw: Vec<u8>,
    input: Vec<u8>,
    pos: usize,
    pub output: Vec<u8>,
    wire: Vec<u8>,
    timeout: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("tls", &self.is_tls())
            .field("compressed", &self.is_compressed())
            .finish()
    }
}

impl Conn {
    pub fn new(stream: TcpStream, timeout: Duration) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn {
            transport: Transport::Plain(stream),
            inflater: None,
            tls: false,
            deflater: None,
            raw: vec![0; 64 * 1024],
            input: Vec::with_capacity(64 * 1024),
            pos: 0,
            output: Vec::with_capacity(16 * 1024),
            wire: Vec::new(),
            timeout,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls || matches!(self.transport, Transport::Tls(_))
    }

    pub fn is_compressed(&self) -> bool {
        self.deflater.is_some()
    }

    /// Reads until the decoder completes a line, or pauses with a batch of RECORD
    /// items. File literal bytes go to `sink` as they arrive (through
    /// `block_in_place` when the sink may write to disk).
    pub async fn read_line(
        &mut self,
        decoder: &mut Decoder,
        sink: &mut (dyn FileSink + Send),
    ) -> Result<ReadOutcome, ConnError> {
        loop {
            while self.pos < self.input.len() {
                let input = &self.input[self.pos..];
                // Bytes inside a file that the sink only buffers need no blocking
                // thread; anything else may create, write or rename files. (Moving
                // every small chunk of a compressed stream to a blocking thread cost
                // a sixth of the server's CPU.)
                let in_memory = decoder
                    .file_remaining()
                    .is_some_and(|r| r > input.len() as u64)
                    && sink.buffers(input.len());
                let feed = if in_memory {
                    decoder.feed(input, sink)
                } else {
                    tokio::task::block_in_place(|| decoder.feed(input, sink))
                }
                .map_err(ConnError::Decode)?;
                self.pos += feed.consumed;
                if feed.complete {
                    return Ok(ReadOutcome::Line);
                }
                if feed.records {
                    return Ok(ReadOutcome::Records);
                }
            }
            self.input.clear();
            self.pos = 0;
            match self.fill().await? {
                Some(0) => return Ok(ReadOutcome::Eof),
                Some(_) => {}
                None => return Ok(ReadOutcome::Timeout),
            }
        }
    }

    /// Reads more bytes into `input`; `Some(0)` at EOF, `None` on timeout.
    async fn fill(&mut self) -> Result<Option<usize>, ConnError> {
        if self.inflater.is_some() {
            return self.fill_inflated().await;
        }
        let mut reader = self.transport.as_read().ok_or_else(swapping)?;
        let n = match tokio::time::timeout(self.timeout, reader.read(&mut self.raw)).await {
            Err(_) => return Ok(None),
            Ok(r) => r?,
        };
        self.bytes_in += n as u64;
        self.input.extend_from_slice(&self.raw[..n]);
        Ok(Some(n))
    }

    /// [`Conn::fill`] under compression: the next chunk the reading task inflated.
    async fn fill_inflated(&mut self) -> Result<Option<usize>, ConnError> {
        let Some(reader) = self.inflater.as_mut() else {
            return Err(ConnError::Compress("compression is not active".into()));
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let Ok(chunk) = tokio::time::timeout_at(deadline, reader.next()).await else {
                return Ok(None);
            };
            match chunk {
                Some(Chunk::Plain(plain, compressed)) => {
                    self.bytes_in += compressed as u64;
                    if plain.is_empty() {
                        continue;
                    }
                    let n = plain.len();
                    let used = if self.input.is_empty() {
                        std::mem::replace(&mut self.input, plain)
                    } else {
                        self.input.extend_from_slice(&plain);
                        plain
                    };
                    reader.recycle(used);
                    return Ok(Some(n));
                }
                Some(Chunk::Eof) | None => return Ok(Some(0)),
                Some(Chunk::Failed(ReadFailure::Io(e))) => return Err(ConnError::Io(e)),
                Some(Chunk::Failed(ReadFailure::Inflate(e))) => {
                    return Err(ConnError::Compress(e));
                }
            }
        }
    }

    /// Appends a line (CRLF added).
    pub fn write_line(&mut self, line: &str) {
        self.output.extend_from_slice(line.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    /// Sends everything buffered (compressed with a sync flush when active).
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if self.output.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.output);
        let bytes: &[u8] = match &mut self.deflater {
            Some(deflater) => {
                self.wire.clear();
                deflater
                    .compress(&out, &mut self.wire)
                    .map_err(|e| ConnError::Compress(e.to_string()))?;
                &self.wire
            }
            None => &out,
        };
        self.bytes_out += bytes.len() as u64;
        let writer = self.transport.as_write().ok_or_else(swapping)?;
        let mut writer = writer;
        writer.write_all(bytes).await?;
        writer.flush().await?;
        self.output = out;
        self.output.clear();
        Ok(())
    }

    /// Switches both directions to raw DEFLATE. Bytes already read after the COMPRESS
    /// line are compressed data and are inflated first.
    pub fn start_compression(&mut self, level: u32) -> Result<(), ConnError> {
        let stream: Box<dyn Stream> =
            match std::mem::replace(&mut self.transport, Transport::Swapping) {
                Transport::Plain(s) => Box::new(s),
                Transport::Tls(s) => {
                    self.tls = true;
                    s
                }
                other => {
                    self.transport = other;
                    return Err(ConnError::Compress("compression is already active".into()));
                }
            };
        let (read, write) = tokio::io::split(stream);
        let leftover: Vec<u8> = self.input.drain(self.pos..).collect();
        self.input.clear();
        self.pos = 0;
        self.inflater = Some(CompressedReader::start(read, leftover));
        self.transport = Transport::Compressed(write);
        self.deflater = Some(Deflater::new(level));
        Ok(())
    }

    /// STARTTLS: the handshake starts on the next byte; anything the client pipelined
    /// after the command is discarded, as Cyrus does.
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> Result<(), ConnError> {
        self.input.clear();
        self.pos = 0;
        let Transport::Plain(stream) = std::mem::replace(&mut self.transport, Transport::Swapping)
        else {
            return Err(ConnError::Io(io::Error::other("TLS already active")));
        };
        let tls = tokio::time::timeout(self.timeout, acceptor.accept(stream))
            .await
            .map_err(|_| {
                ConnError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ))
            })??;
        self.transport = Transport::Tls(Box::new(tls));
        Ok(())
    }

    /// Closes the write side.
    pub async fn shutdown(&mut self) {
        if let Some(mut w) = self.transport.as_write() {
            let _ = w.shutdown().await;
        }
    }
}

/// Failures of the byte pipe.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Decode(csync_protocol::DecodeError),
    #[error("compression: {0}")]
    Compress(String),
}

/// A rustls server configuration from PEM files.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<TlsAcceptor> {
    use anyhow::Context;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading tls_server_cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing tls_server_cert {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading tls_server_key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
