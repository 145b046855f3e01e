//! The master's connection to a replica (spec §1.4): greeting, STARTTLS when needed,
//! AUTHENTICATE, COMPRESS DEFLATE whenever offered, `APPLY CAPABILITIES`, then one
//! command at a time. Blocking I/O: a sync run is a sequence of request/response
//! round trips, and message bodies are streamed from disk straight into the socket.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use csync_auth::{ClientExchange, ClientStep};
use csync_protocol::command::Command;
use csync_protocol::compress::{Deflater, Inflater};

use crate::deflate_pool::{DeflatePool, UploadError};
use crate::readahead;
use csync_protocol::decode::{Body, CollectFiles, Decoder, Mode};
use csync_protocol::encode::{Encoder, LiteralStyle};
use csync_protocol::mailbox::Required;
use csync_protocol::response::{Completion, DataItem, Greeting, Response, SyncStatus};
use csync_protocol::{Guid, sasl};
use tracing::{debug, info, trace};

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    /// `host:port/tls`: TLS from the first byte (csync's sync_server does not do
    /// this; kept for sites with a TLS terminator in front).
    pub implicit_tls: bool,
    pub authname: String,
    pub password: String,
    pub authzid: Option<String>,
    /// Allow PLAIN/LOGIN without TLS.
    pub allow_plaintext: bool,
    /// Require TLS (STARTTLS) even when a mechanism is usable in the clear.
    pub require_tls: bool,
    /// Fail unless the server offers COMPRESS (`-z`).
    pub require_compress: bool,
    /// Deflate level for what we send (1: fast; the replica decompresses anyway).
    pub compress_level: u32,
    /// Threads that compress message uploads (`csync_compress_threads`); below 2,
    /// the connection's own thread does.
    pub compress_threads: usize,
    /// Ask for SIEVE-MAILBOX when offered. csync stores sieve scripts outside
    /// mailboxes, so it replicates them with the script commands (off).
    pub sieve_mailbox: bool,
    /// `csync_staged_limit`: staged (partition, GUID) entries the connection
    /// remembers before it sends `RESTART` at the next safe point (between users).
    pub staged_limit: usize,
    pub connect_timeout: Duration,
    /// `sync_timeout`.
    pub timeout: Duration,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What can go wrong talking to the replica.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connecting to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("connection to the replica: {0}")]
    Io(#[from] io::Error),
    #[error("protocol error from the replica: {0}")]
    Protocol(String),
    #[error("authentication as {user} failed: {reply}")]
    AuthFailed { user: String, reply: String },
    #[error("no usable authentication mechanism: {0}")]
    NoMechanism(String),
    #[error("the replica does not offer COMPRESS and -z requires it")]
    NoCompress,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the replica said BYE: {0}")]
    Bye(String),
}

/// A completed command: its data lines and completion.
#[derive(Debug)]
pub struct Reply {
    pub data: Vec<DataItem>,
    /// Bytes of `* MESSAGE` file literals, by line index.
    pub files: Vec<Vec<u8>>,
    pub completion: Completion,
}

impl Reply {
    /// `Ok` for `OK`, the status of a `NO`, `ProtocolError` for anything else.
    pub fn status(&self) -> SyncStatus {
        match &self.completion {
            Completion::Ok(_) => SyncStatus::Ok,
            Completion::No { status, .. } => *status,
            Completion::Bad(_) | Completion::Bye(_) => SyncStatus::ProtocolError,
        }
    }

    pub fn text(&self) -> String {
        match &self.completion {
            Completion::Ok(t) => format!("OK {t}"),
            Completion::No { text, .. } => format!("NO {text}"),
            Completion::Bad(t) => format!("BAD {t}"),
            Completion::Bye(t) => format!("BYE {t}"),
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// Only while STARTTLS moves the TCP stream into TLS.
    Upgrading,
}

fn upgrading() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection is being upgraded to TLS",
    )
}

impl Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Upgrading => Err(upgrading()),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf),
            Stream::Tls(s) => s.write_all(buf),
            Stream::Upgrading => Err(upgrading()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Upgrading => Err(upgrading()),
        }
    }
}

/// Counters of one connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Every command sent (session commands such as COMPRESS and EXIT included).
    pub commands: u64,
    /// `GET ...` commands (reads).
    pub gets: u64,
    /// `APPLY ...` commands (changes on the replica, `APPLY MESSAGE` included).
    pub applies: u64,
    pub messages_sent: u64,
    pub message_bytes_sent: u64,
    pub wire_bytes_out: u64,
    pub wire_bytes_in: u64,
    /// `RESTART`s answered (after each rolling item that uploads, and between users
    /// whenever the staged set reached its limit).
    pub restarts: u64,
}

/// An authenticated connection to a replica.
pub struct Connection {
    stream: Stream,
    decoder: Decoder,
    inflater: Option<Inflater>,
    deflater: Option<Deflater>,
    /// Compresses `APPLY MESSAGE` uploads on several cores; started at the first
    /// compressed upload when `compress_threads` is 2 or more.
    deflate_pool: Option<DeflatePool>,
    compress_level: u32,
    compress_threads: usize,
    input: Vec<u8>,
    pos: usize,
    raw: Vec<u8>,
    wire: Vec<u8>,
    encoder: Encoder,
    pub greeting: Greeting,
    pub sieve_mailbox: bool,
    pub tls: bool,
    pub compressed: bool,
    /// (partition, GUID) staged on the replica since the last RESTART (spec §10.1
    /// item 2): never re-uploaded, and reset by RESTART, which
    /// [`Connection::restart_if_full`] sends between users once it holds
    /// `staged_limit` entries.
    staged: Staged,
    /// Commands sent with [`Connection::command_streamed_deferred`] whose replies are
    /// still on the wire, oldest first: whether the reply is wanted (a discarded one is
    /// read and dropped).
    unread: VecDeque<bool>,
    /// Deferred replies already read (while waiting for a later command's reply),
    /// oldest first, for [`Connection::take_deferred`]. A failure is kept as its text.
    early: VecDeque<Result<Reply, String>>,
    /// One entry per wanted deferred reply, oldest first: the upload it answers, for
    /// an `APPLY MESSAGE` sent with [`Connection::apply_message_deferred`].
    deferred_uploads: VecDeque<Option<InFlightUpload>>,
    pub stats: Stats,
    target: String,
    /// A `GET USER` sent ahead for this user (see [`Connection::prefetch_user`]).
    prefetched_user: Option<String>,
    /// A mailbox of the previous user whose `APPLY MAILBOX` reply (and last upload's)
    /// is still deferred: collected by the next folder pass, so the replica's commit
    /// of it overlaps the next user's first upload.
    pub carried: Option<CarriedMailbox>,
    /// Failures of carried mailboxes, for the user they belong to: (user, error).
    pub carried_failures: Vec<(String, String)>,
}

/// An `APPLY MESSAGE` whose reply is still to come: its files count as staged
/// meanwhile (a later mailbox does not send them again), and become staged for good
/// once the reply is OK.
#[derive(Debug)]
struct InFlightUpload {
    /// The GUIDs by partition (one partition, a mailbox's, in practice): looked up
    /// for every record of the mailboxes that follow.
    by_partition: Vec<(String, HashSet<Guid>)>,
    files: usize,
    bytes: u64,
}

impl InFlightUpload {
    fn new(pending: &[&MessageUpload], bytes: u64) -> InFlightUpload {
        let mut by_partition: Vec<(String, HashSet<Guid>)> = Vec::new();
        for f in pending {
            match by_partition.iter_mut().find(|(p, _)| *p == f.partition) {
                Some((_, guids)) => {
                    guids.insert(f.guid);
                }
                None => by_partition.push((f.partition.clone(), HashSet::from([f.guid]))),
            }
        }
        InFlightUpload {
            by_partition,
            files: pending.len(),
            bytes,
        }
    }

    fn contains(&self, partition: &str, guid: &Guid) -> bool {
        self.by_partition
            .iter()
            .any(|(p, guids)| p == partition && guids.contains(guid))
    }
}

/// See [`Connection::carried`].
#[derive(Debug)]
pub struct CarriedMailbox {
    pub userid: String,
    pub mailbox: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target)
            .field("tls", &self.tls)
            .field("compressed", &self.compressed)
            .finish()
    }
}

/// Writes a streamed command: gets the encoder and a flush function to call when the
/// encoder's buffer may have grown large.
pub type StreamWriter<'a> = dyn FnMut(
        &mut Encoder,
        &mut dyn FnMut(&mut Encoder) -> Result<(), ConnError>,
    ) -> Result<(), ConnError>
    + 'a;

/// Largest chunk written to the socket at once while streaming.
const FLUSH_AT: usize = 256 * 1024;

/// Default `csync_staged_limit`: staged (partition, GUID) entries remembered before a
/// `RESTART` between users (a table of about 3 MiB at that size).
pub const DEFAULT_STAGED_LIMIT: usize = 65_536;

/// The (partition, GUID) pairs staged on the replica since the last `RESTART`. The
/// partition names are interned (an entry holds an index into `partitions`), so an
/// entry is 22 bytes with no allocation of its own.
#[derive(Debug)]
struct Staged {
    /// The partitions of the entries, in order of first use (a handful).
    partitions: Vec<String>,
    entries: HashSet<(u16, Guid)>,
    /// [`Staged::is_full`] from this many entries on.
    limit: usize,
}

impl Staged {
    fn new(limit: usize) -> Staged {
        Staged {
            partitions: Vec::new(),
            entries: HashSet::new(),
            limit: limit.max(1),
        }
    }

    fn index(&self, partition: &str) -> Option<u16> {
        self.partitions
            .iter()
            .position(|p| p == partition)
            .and_then(|i| u16::try_from(i).ok())
    }

    fn insert(&mut self, partition: &str, guid: Guid) {
        let index = match self.index(partition) {
            Some(i) => i,
            None => {
                // More than 65,536 partitions cannot happen; if it did, the entry
                // would only be forgotten (the file uploaded again).
                let Ok(i) = u16::try_from(self.partitions.len()) else {
                    return;
                };
                self.partitions.push(partition.to_owned());
                i
            }
        };
        self.entries.insert((index, guid));
    }

    fn contains(&self, partition: &str, guid: &Guid) -> bool {
        self.index(partition)
            .is_some_and(|i| self.entries.contains(&(i, *guid)))
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_full(&self) -> bool {
        self.entries.len() >= self.limit
    }

    /// Forgets everything; a table that grew past what the limit needs (one very
    /// large user) is given back.
    fn clear(&mut self) {
        self.entries.clear();
        self.entries.shrink_to(self.limit);
        self.partitions.clear();
    }
}

impl Connection {
    /// A connection over `stream`, before the greeting.
    fn new(stream: Stream, target: String, opts: &ConnectOptions) -> Connection {
        Connection {
            stream,
            decoder: Decoder::new(Mode::Text),
            inflater: None,
            deflater: None,
            input: Vec::with_capacity(64 * 1024),
            pos: 0,
            raw: vec![0; 64 * 1024],
            wire: Vec::new(),
            encoder: Encoder::new(LiteralStyle::NonSynchronizing),
            greeting: Greeting::default(),
            sieve_mailbox: false,
            tls: false,
            compressed: false,
            deflate_pool: None,
            compress_level: opts.compress_level,
            compress_threads: opts.compress_threads,
            staged: Staged::new(opts.staged_limit),
            unread: VecDeque::new(),
            early: VecDeque::new(),
            deferred_uploads: VecDeque::new(),
            stats: Stats::default(),
            target,
            prefetched_user: None,
            carried: None,
            carried_failures: Vec::new(),
        }
    }

    /// Connects, authenticates and negotiates as the Cyrus client does (§1.4).
    pub fn connect(opts: &ConnectOptions) -> Result<Connection, ConnError> {
        let target = format!("{}:{}", opts.host, opts.port);
        let addr = (opts.host.as_str(), opts.port)
            .to_socket_addrs()
            .and_then(|mut a| {
                a.next()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
            })
            .map_err(|source| ConnError::Connect {
                target: target.clone(),
                source,
            })?;
        let tcp = TcpStream::connect_timeout(&addr, opts.connect_timeout).map_err(|source| {
            ConnError::Connect {
                target: target.clone(),
                source,
            }
        })?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(opts.connect_timeout))?;
        let mut conn = Connection::new(Stream::Plain(tcp), target, opts);
        if opts.implicit_tls {
            conn.start_tls(opts)?;
        }
        conn.read_greeting()?;
        let plaintext_ok = opts.allow_plaintext || conn.tls;
        let usable = ClientExchange::new(
            &conn.greeting.sasl,
            conn.tls,
            plaintext_ok,
            &opts.authname,
            &opts.password,
            opts.authzid.as_deref(),
        )
        .is_ok();
        if !conn.tls && (opts.require_tls || !usable) && conn.greeting.starttls {
            conn.send_raw(b"STARTTLS\r\n")?;
            let line = conn.read_text_line()?;
            if !line.starts_with("OK") {
                return Err(ConnError::Tls(format!("STARTTLS refused: {line}")));
            }
            conn.start_tls(opts)?;
            conn.greeting = Greeting::default();
            conn.read_greeting()?;
        } else if opts.require_tls && !conn.tls {
            return Err(ConnError::Tls(
                "TLS is required but the replica does not offer STARTTLS".into(),
            ));
        }
        conn.authenticate(opts)?;
        if conn.greeting.compress && !conn.tls {
            let reply = conn.command(&Command::Compress {
                algorithm: "DEFLATE".into(),
            })?;
            if reply.status() == SyncStatus::Ok {
                conn.deflater = Some(Deflater::new(opts.compress_level));
                let mut inflater = Inflater::new();
                let leftover: Vec<u8> = conn.input.drain(conn.pos..).collect();
                conn.input.clear();
                conn.pos = 0;
                inflater
                    .decompress(&leftover, &mut conn.input)
                    .map_err(|e| ConnError::Protocol(e.to_string()))?;
                conn.inflater = Some(inflater);
                conn.compressed = true;
            } else {
                info!("replica refused COMPRESS: {}", reply.text());
            }
        }
        if opts.require_compress && !conn.compressed {
            return Err(ConnError::NoCompress);
        }
        if conn.greeting.sieve_mailbox && opts.sieve_mailbox {
            let reply = conn.command(&Command::Apply(
                csync_protocol::ApplyCommand::Capabilities(vec!["SIEVE-MAILBOX".into()]),
            ))?;
            conn.sieve_mailbox = reply.data.iter().any(
                |d| matches!(d, DataItem::Enabled(c) if c.iter().any(|x| x == "SIEVE-MAILBOX")),
            );
        }
        if let Stream::Plain(s) = &conn.stream {
            s.set_read_timeout(Some(opts.timeout))?;
        } else if let Stream::Tls(s) = &conn.stream {
            s.sock.set_read_timeout(Some(opts.timeout))?;
        }
        info!(
            target = %conn.target,
            tls = conn.tls,
            compressed = conn.compressed,
            "connected"
        );
        Ok(conn)
    }

    fn start_tls(&mut self, opts: &ConnectOptions) -> Result<(), ConnError> {
        let config = opts
            .tls
            .clone()
            .ok_or_else(|| ConnError::Tls("no TLS client configuration".into()))?;
        let name = rustls_pki_types::ServerName::try_from(opts.host.clone())
            .map_err(|e| ConnError::Tls(format!("server name {}: {e}", opts.host)))?;
        let connection = rustls::ClientConnection::new(config, name)
            .map_err(|e| ConnError::Tls(e.to_string()))?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            return Err(ConnError::Tls("TLS already active".into()));
        };
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        // Drive the handshake now so certificate errors surface here.
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| ConnError::Tls(e.to_string()))?;
        }
        self.stream = Stream::Tls(Box::new(tls));
        self.input.clear();
        self.pos = 0;
        self.tls = true;
        Ok(())
    }

    fn read_greeting(&mut self) -> Result<(), ConnError> {
        loop {
            let line = self.read_text_line()?;
            if self.greeting.read_line(line.as_bytes()) {
                debug!(banner = %self.greeting.banner, "greeting");
                return Ok(());
            }
        }
    }

    fn authenticate(&mut self, opts: &ConnectOptions) -> Result<(), ConnError> {
        let plaintext_ok = opts.allow_plaintext || self.tls;
        let mut exchange = ClientExchange::new(
            &self.greeting.sasl,
            self.tls,
            plaintext_ok,
            &opts.authname,
            &opts.password,
            opts.authzid.as_deref(),
        )
        .map_err(|e| ConnError::NoMechanism(format!("{e} (offered: {:?})", self.greeting.sasl)))?;
        let mut line = Vec::new();
        let request = sasl::Authenticate {
            mechanism: exchange.mechanism().name().to_owned(),
            initial_response: exchange.initial_response().map(<[u8]>::to_vec),
        };
        request
            .encode(&mut line)
            .map_err(|e| ConnError::Protocol(e.to_string()))?;
        self.send_raw(&line)?;
        loop {
            let reply = self.read_text_line()?;
            match sasl::parse_server_line(reply.as_bytes()) {
                Ok(sasl::ServerLine::Challenge(challenge)) => {
                    let step = exchange
                        .step(&challenge)
                        .map_err(|e| ConnError::AuthFailed {
                            user: opts.authname.clone(),
                            reply: e.to_string(),
                        })?;
                    let mut out = Vec::new();
                    match step {
                        ClientStep::Response(r) => sasl::encode_response(&r, &mut out),
                        ClientStep::Done => sasl::encode_response(b"", &mut out),
                    }
                    self.send_raw(&out)?;
                }
                Ok(sasl::ServerLine::Ok(_)) => {
                    exchange.finish().map_err(|e| ConnError::AuthFailed {
                        user: opts.authname.clone(),
                        reply: e.to_string(),
                    })?;
                    debug!(mechanism = exchange.mechanism().name(), "authenticated");
                    return Ok(());
                }
                Ok(_) | Err(_) => {
                    return Err(ConnError::AuthFailed {
                        user: opts.authname.clone(),
                        reply,
                    });
                }
            }
        }
    }

    /// Writes bytes (compressed when active) and flushes.
    fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        let out: &[u8] = match &mut self.deflater {
            Some(d) => {
                self.wire.clear();
                d.compress(bytes, &mut self.wire)
                    .map_err(|e| ConnError::Protocol(e.to_string()))?;
                &self.wire
            }
            None => bytes,
        };
        self.stats.wire_bytes_out += out.len() as u64;
        self.stream.write_all(out)?;
        self.stream.flush()?;
        Ok(())
    }

    fn fill(&mut self) -> Result<(), ConnError> {
        let n = self.stream.read(&mut self.raw)?;
        if n == 0 {
            return Err(ConnError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the replica closed the connection",
            )));
        }
        self.stats.wire_bytes_in += n as u64;
        match &mut self.inflater {
            Some(i) => i
                .decompress(&self.raw[..n], &mut self.input)
                .map_err(|e| ConnError::Protocol(e.to_string()))?,
            None => self.input.extend_from_slice(&self.raw[..n]),
        }
        Ok(())
    }

    /// Reads one line into the decoder.
    fn read_line(&mut self, files: &mut CollectFiles) -> Result<(), ConnError> {
        loop {
            if self.pos < self.input.len() {
                let feed = self
                    .decoder
                    .feed(&self.input[self.pos..], files)
                    .map_err(|e| ConnError::Protocol(e.to_string()))?;
                self.pos += feed.consumed;
                if feed.complete {
                    if self.pos == self.input.len() {
                        self.input.clear();
                        self.pos = 0;
                    }
                    return Ok(());
                }
                continue;
            }
            self.input.clear();
            self.pos = 0;
            self.fill()?;
        }
    }

    fn read_text_line(&mut self) -> Result<String, ConnError> {
        self.decoder.set_mode(Mode::Text);
        let mut files = CollectFiles::default();
        self.read_line(&mut files)?;
        let line = self
            .decoder
            .line()
            .map(|l| l.word.to_vec())
            .unwrap_or_default();
        self.decoder.set_mode(Mode::Responses);
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    /// Reads a reply: data lines until the completion line.
    fn read_reply(&mut self, required: Required) -> Result<Reply, ConnError> {
        self.decoder.set_mode(Mode::Responses);
        let mut files = CollectFiles::default();
        let mut data = Vec::new();
        loop {
            self.read_line(&mut files)?;
            let line = self
                .decoder
                .line()
                .ok_or_else(|| ConnError::Protocol("no line".into()))?;
            if let Body::Malformed(e) = line.body {
                let word = String::from_utf8_lossy(line.word).into_owned();
                return Err(ConnError::Protocol(format!(
                    "unreadable reply line starting {word:?}: {e}"
                )));
            }
            match Response::from_line(line).map_err(|e| ConnError::Protocol(e.to_string()))? {
                Response::Data(item) => {
                    let decoded = DataItem::decode(item, required)
                        .map_err(|e| ConnError::Protocol(format!("bad data line: {e}")))?;
                    trace!(?decoded, "data");
                    data.push(decoded);
                }
                Response::Done(Completion::Bye(text)) => return Err(ConnError::Bye(text)),
                Response::Done(completion) => {
                    return Ok(Reply {
                        data,
                        files: files.files,
                        completion,
                    });
                }
                Response::Continue(_) => {
                    return Err(ConnError::Protocol("unexpected continuation".into()));
                }
            }
        }
    }

    /// Sends one command and reads its reply.
    pub fn command(&mut self, command: &Command) -> Result<Reply, ConnError> {
        let required = match command {
            Command::Get(csync_protocol::GetCommand::FullMailbox(_)) => Required::FullReply,
            _ => Required::ListReply,
        };
        self.send_command(command)?;
        let reply = self.read_reply_in_order(required)?;
        if let Command::Restart = command {
            self.staged.clear();
            self.stats.restarts += 1;
        }
        Ok(reply)
    }

    fn send_command(&mut self, command: &Command) -> Result<(), ConnError> {
        self.encoder.clear();
        command.encode(&mut self.encoder);
        let bytes = self.encoder.take();
        log_sending(&bytes);
        self.stats.commands += 1;
        match command {
            Command::Get(_) => self.stats.gets += 1,
            // A session negotiation, not a change.
            Command::Apply(csync_protocol::ApplyCommand::Capabilities(_)) => {}
            Command::Apply(_) => self.stats.applies += 1,
            _ => {}
        }
        let sent = self.send_raw(&bytes);
        self.encoder = Encoder::with_buffer(LiteralStyle::NonSynchronizing, bytes);
        sent
    }

    /// `GET USER` for the user a manual run syncs next, sent now and answered in
    /// turn: its reply is taken with [`take_prefetched_user`](Self::take_prefetched_user).
    pub fn prefetch_user(&mut self, userid: &str) -> Result<(), ConnError> {
        self.send_command(&Command::Get(csync_protocol::GetCommand::User(
            userid.to_owned(),
        )))?;
        self.unread.push_back(true);
        self.deferred_uploads.push_back(None);
        self.prefetched_user = Some(userid.to_owned());
        Ok(())
    }

    /// The reply of a prefetched `GET USER` for `userid`, if one is pending. It is
    /// the oldest deferred reply then: everything sent before it was collected by the
    /// previous user's folder pass.
    pub fn take_prefetched_user(&mut self, userid: &str) -> Option<Result<Reply, ConnError>> {
        if self.prefetched_user.as_deref() != Some(userid) {
            return None;
        }
        self.prefetched_user = None;
        Some(self.take_deferred())
    }

    pub fn has_prefetched_user(&self) -> bool {
        self.prefetched_user.is_some()
    }

    /// Whether the staged set has reached its limit (the next user boundary sends
    /// `RESTART`, which needs no reply outstanding).
    pub fn staged_full(&self) -> bool {
        // Files of an upload whose reply is still to come will be staged too.
        let in_flight: usize = self
            .deferred_uploads
            .iter()
            .flatten()
            .map(|u| u.files)
            .sum();
        self.staged.len() + in_flight >= self.staged.limit
    }

    /// Sends a command whose bytes the caller writes through `write` (a large
    /// `APPLY MAILBOX` streamed record by record): `write` gets an encoder and a
    /// flush function for when its buffer grows.
    pub fn command_streamed(&mut self, write: &mut StreamWriter<'_>) -> Result<Reply, ConnError> {
        self.send_streamed(write)?;
        self.read_reply_in_order(Required::ListReply)
    }

    /// As [`command_streamed`](Self::command_streamed), but does not wait for the
    /// reply: the caller sends more (the next mailbox's `APPLY MESSAGE`, which the
    /// replica reads once this command is done, so the master prepares and compresses
    /// it while the replica commits) and collects this reply with
    /// [`take_deferred`](Self::take_deferred). Replies arrive in order, so every later
    /// command reads the deferred ones first and keeps them.
    pub fn command_streamed_deferred(
        &mut self,
        write: &mut StreamWriter<'_>,
    ) -> Result<(), ConnError> {
        self.send_streamed(write)?;
        self.unread.push_back(true);
        self.deferred_uploads.push_back(None);
        Ok(())
    }

    /// The reply of the oldest command sent with
    /// [`command_streamed_deferred`](Self::command_streamed_deferred), reading it if
    /// it is still on the wire.
    pub fn take_deferred(&mut self) -> Result<Reply, ConnError> {
        let upload = self.deferred_uploads.pop_front().flatten();
        let reply = if let Some(early) = self.early.pop_front() {
            early.map_err(ConnError::Protocol)
        } else {
            match self.unread.pop_front() {
                Some(true) => self.read_reply(Required::ListReply),
                _ => Err(ConnError::Protocol("no deferred reply is pending".into())),
            }
        };
        if let (Some(upload), Ok(reply)) = (upload, &reply)
            && reply.status() == SyncStatus::Ok
        {
            self.uploaded(upload);
        }
        reply
    }

    /// An upload the replica answered OK: its files are staged there.
    fn uploaded(&mut self, upload: InFlightUpload) {
        self.stats.messages_sent += upload.files as u64;
        self.stats.message_bytes_sent += upload.bytes;
        for (partition, guids) in upload.by_partition {
            for guid in guids {
                self.staged.insert(&partition, guid);
            }
        }
    }

    /// If the oldest deferred reply is that of an `APPLY MESSAGE`: its number of
    /// files and bytes.
    pub fn deferred_upload_next(&self) -> Option<(u64, u64)> {
        self.deferred_uploads
            .front()
            .and_then(Option::as_ref)
            .map(|u| (u.files as u64, u.bytes))
    }

    /// Drops the deferred replies nobody will collect (a sync step that failed before
    /// taking them): those still on the wire are read and thrown away when their turn
    /// comes.
    pub fn discard_deferred(&mut self) {
        self.prefetched_user = None;
        if let Some(carried) = self.carried.take() {
            self.carried_failures.push((
                carried.userid,
                format!("{}: reply dropped after an error", carried.mailbox),
            ));
        }
        self.early.clear();
        self.deferred_uploads.clear();
        for wanted in &mut self.unread {
            *wanted = false;
        }
    }

    /// Commands whose replies were deferred and not yet collected.
    pub fn deferred_pending(&self) -> usize {
        self.early.len() + self.unread.iter().filter(|w| **w).count()
    }

    /// Reads the deferred replies still on the wire (keeping the wanted ones), then
    /// the reply of the command just sent.
    fn read_reply_in_order(&mut self, required: Required) -> Result<Reply, ConnError> {
        while let Some(wanted) = self.unread.pop_front() {
            match self.read_reply(Required::ListReply) {
                Ok(reply) => {
                    if wanted {
                        self.early.push_back(Ok(reply));
                    }
                }
                Err(e) => {
                    if wanted {
                        self.early.push_back(Err(e.to_string()));
                    }
                    return Err(e);
                }
            }
        }
        self.read_reply(required)
    }

    fn send_streamed(&mut self, write: &mut StreamWriter<'_>) -> Result<(), ConnError> {
        let mut encoder = std::mem::replace(
            &mut self.encoder,
            Encoder::new(LiteralStyle::NonSynchronizing),
        );
        encoder.clear();
        // Streamed commands are APPLY MAILBOX (the only large command).
        self.stats.commands += 1;
        self.stats.applies += 1;
        let mut logged = false;
        let result = {
            let mut flush = |enc: &mut Encoder| -> Result<(), ConnError> {
                if enc.bytes().len() >= FLUSH_AT {
                    let bytes = enc.take();
                    if !logged {
                        log_sending(&bytes);
                        logged = true;
                    }
                    self.send_raw(&bytes)?;
                }
                Ok(())
            };
            write(&mut encoder, &mut flush)
        };
        let rest = encoder.take();
        self.encoder = encoder;
        result?;
        if !logged {
            log_sending(&rest);
        }
        self.send_raw(&rest)
    }

    /// Uploads message files with `APPLY MESSAGE`, streaming each from disk. Files
    /// already staged on this connection are skipped.
    pub fn apply_message(&mut self, files: &[MessageUpload]) -> Result<Reply, ConnError> {
        let pending = self.not_staged(files);
        if pending.is_empty() {
            return Ok(Reply {
                data: Vec::new(),
                files: Vec::new(),
                completion: Completion::Ok("nothing to upload".into()),
            });
        }
        let bytes = self.send_upload(&pending)?;
        let reply = self.read_reply_in_order(Required::ListReply)?;
        if reply.status() == SyncStatus::Ok {
            self.uploaded(InFlightUpload::new(&pending, bytes));
        }
        Ok(reply)
    }

    /// As [`apply_message`](Self::apply_message), but does not wait for the reply,
    /// which [`take_deferred`](Self::take_deferred) collects (marking the files
    /// staged if it is OK): the master goes on to the mailbox's `APPLY MAILBOX` and
    /// the next upload while the replica stores this one. Whether anything was sent.
    pub fn apply_message_deferred(&mut self, files: &[MessageUpload]) -> Result<bool, ConnError> {
        let pending = self.not_staged(files);
        if pending.is_empty() {
            return Ok(false);
        }
        let bytes = self.send_upload(&pending)?;
        self.unread.push_back(true);
        self.deferred_uploads
            .push_back(Some(InFlightUpload::new(&pending, bytes)));
        Ok(true)
    }

    /// The files of an upload the replica does not have from this connection yet.
    fn not_staged<'f>(&self, files: &'f [MessageUpload]) -> Vec<&'f MessageUpload> {
        files
            .iter()
            .filter(|f| !self.is_staged(&f.partition, &f.guid))
            .collect()
    }

    /// Writes an `APPLY MESSAGE`; the plain bytes of its files.
    fn send_upload(&mut self, pending: &[&MessageUpload]) -> Result<u64, ConnError> {
        debug!(command = %format!("APPLY MESSAGE ({} files)", pending.len()), "sending");
        let sent_bytes = if self.deflater.is_some() && self.compress_threads >= 2 {
            self.upload_pooled(pending)?
        } else {
            let mut emit = |bytes: &[u8]| self.send_raw_buffered(bytes);
            let sent = write_upload(pending, &mut emit)?;
            self.stream.flush()?;
            sent
        };
        self.stats.commands += 1;
        self.stats.applies += 1;
        Ok(sent_bytes)
    }

    /// Sends an upload through the deflate pool: its threads compress segments of it
    /// at once, and the connection's deflater carries on after it.
    fn upload_pooled(&mut self, files: &[&MessageUpload]) -> Result<u64, ConnError> {
        if self.deflate_pool.is_none() {
            self.deflate_pool = Some(DeflatePool::new(
                self.compress_threads,
                self.compress_level,
            )?);
        }
        let (Some(pool), Some(deflater)) = (self.deflate_pool.as_mut(), self.deflater.as_mut())
        else {
            return Err(ConnError::Protocol("compression is not active".into()));
        };
        let stream = &mut self.stream;
        let stats = &mut self.stats;
        let mut write = |out: &[u8]| -> io::Result<()> {
            stats.wire_bytes_out += out.len() as u64;
            stream.write_all(out)
        };
        let mut upload = pool.upload();
        let sent = write_upload(files, &mut |bytes: &[u8]| {
            upload.put(bytes, &mut write).map_err(ConnError::from)
        })?;
        let (history, _) = upload.finish(&mut write)?;
        deflater.continue_after(&history);
        self.stream.flush()?;
        Ok(sent)
    }

    /// Writes without the final flush of the TCP stream (bodies are written in
    /// pieces; the compressor still sync-flushes each piece so nothing waits).
    fn send_raw_buffered(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        let out: &[u8] = match &mut self.deflater {
            Some(d) => {
                self.wire.clear();
                d.compress(bytes, &mut self.wire)
                    .map_err(|e| ConnError::Protocol(e.to_string()))?;
                &self.wire
            }
            None => bytes,
        };
        self.stats.wire_bytes_out += out.len() as u64;
        self.stream.write_all(out)?;
        Ok(())
    }

    /// Marks GUIDs the replica reported as present after `APPLY RESERVE`.
    pub fn mark_staged(&mut self, partition: &str, guid: Guid) {
        self.staged.insert(partition, guid);
    }

    pub fn is_staged(&self, partition: &str, guid: &Guid) -> bool {
        self.staged.contains(partition, guid)
            || self
                .deferred_uploads
                .iter()
                .flatten()
                .any(|u| u.contains(partition, guid))
    }

    /// (partition, GUID) entries staged since the last `RESTART`.
    pub fn staged_len(&self) -> usize {
        self.staged.len()
    }

    /// How many staged entries [`restart_if_full`](Self::restart_if_full) lets
    /// through (`csync_staged_limit`; at least 1).
    pub fn set_staged_limit(&mut self, limit: usize) {
        self.staged.limit = limit.max(1);
    }

    /// `RESTART`: the replica drops its staging area, and so do we.
    pub fn restart(&mut self) -> Result<(), ConnError> {
        let reply = self.command(&Command::Restart)?;
        if reply.status() != SyncStatus::Ok {
            return Err(ConnError::Protocol(format!("RESTART: {}", reply.text())));
        }
        Ok(())
    }

    /// At a safe point (between users: no `APPLY MAILBOX` of the last one can still
    /// refer to a staged file), sends `RESTART` when the staged set has reached its
    /// limit, so the set, and the replica's staging area, stay bounded however many
    /// messages a run replicates. Returns whether it restarted. Never restarts while
    /// a deferred reply is still to be collected.
    pub fn restart_if_full(&mut self) -> Result<bool, ConnError> {
        if !self.staged.is_full() {
            return Ok(false);
        }
        if self.deferred_pending() > 0 {
            debug!(
                staged = self.staged.len(),
                "staged-entry limit reached, but a deferred reply is pending: no RESTART yet"
            );
            return Ok(false);
        }
        debug!(
            staged = self.staged.len(),
            limit = self.staged.limit,
            "staged-entry limit reached: RESTART"
        );
        self.restart()?;
        Ok(true)
    }

    /// `EXIT`, then close.
    pub fn exit(mut self) -> Result<Stats, ConnError> {
        let _ = self.command(&Command::Exit);
        Ok(self.stats)
    }

    pub fn target(&self) -> &str {
        &self.target
    }
}

/// The `-vv` line of a command: its first 120 bytes.
fn log_sending(bytes: &[u8]) {
    debug!(
        command = %String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).trim_end(),
        "sending"
    );
}

/// One message file to upload.
#[derive(Clone, Debug)]
pub struct MessageUpload {
    pub partition: String,
    pub guid: Guid,
    pub size: u32,
    pub path: std::path::PathBuf,
}

impl MessageUpload {
    pub fn new(partition: &str, guid: Guid, size: u32, path: &Path) -> Self {
        MessageUpload {
            partition: partition.to_owned(),
            guid,
            size,
            path: path.to_owned(),
        }
    }
}

/// The plain bytes of `APPLY MESSAGE` with `files` as file literals, streamed from
/// disk through `emit`; returns the message bytes sent. A file whose size changed
/// since it was listed goes as NIL, as Cyrus does.
fn write_upload(
    files: &[&MessageUpload],
    emit: &mut dyn FnMut(&[u8]) -> Result<(), ConnError>,
) -> Result<u64, ConnError> {
    let paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    readahead::with_files_ahead(&paths, |next_file| {
        write_upload_from(files, next_file, emit)
    })
}

fn write_upload_from(
    files: &[&MessageUpload],
    next_file: &mut dyn FnMut() -> readahead::Opened,
    emit: &mut dyn FnMut(&[u8]) -> Result<(), ConnError>,
) -> Result<u64, ConnError> {
    let mut enc = Encoder::new(LiteralStyle::NonSynchronizing);
    csync_protocol::command::encode_apply_message_start(&mut enc);
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent_bytes = 0u64;
    for f in files {
        let (mut file, size) = next_file()?;
        if size != u64::from(f.size) {
            enc.nil();
            continue;
        }
        enc.file_header(f.partition.as_bytes(), &f.guid, f.size);
        emit(&enc.take())?;
        let mut left = u64::from(f.size);
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(ConnError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while being sent", f.path.display()),
                )));
            }
            emit(&buf[..n])?;
            left -= n as u64;
        }
        sent_bytes += u64::from(f.size);
    }
    csync_protocol::command::encode_apply_message_end(&mut enc);
    emit(&enc.take())?;
    Ok(sent_bytes)
}

impl From<UploadError> for ConnError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Write(e) => ConnError::Io(e),
            other => ConnError::Protocol(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    fn guid(n: u8) -> Guid {
        Guid([n; 20])
    }

    #[test]
    fn staged_entries_intern_their_partition() {
        // The point of interning: an entry is a u16 and a GUID, no String.
        assert_eq!(std::mem::size_of::<(u16, Guid)>(), 22);
        let mut staged = Staged::new(100);
        staged.insert("default", guid(1));
        staged.insert("other", guid(1));
        staged.insert("default", guid(2));
        staged.insert("default", guid(2));
        assert_eq!(staged.len(), 3);
        assert_eq!(staged.partitions, ["default", "other"]);
        assert!(staged.contains("default", &guid(1)));
        assert!(staged.contains("other", &guid(1)));
        assert!(staged.contains("default", &guid(2)));
        assert!(!staged.contains("other", &guid(2)));
        assert!(!staged.contains("unknown", &guid(1)));
    }

    #[test]
    fn staged_set_is_full_at_its_limit_and_clears() {
        let mut staged = Staged::new(3);
        assert!(!staged.is_full());
        staged.insert("default", guid(1));
        staged.insert("default", guid(2));
        assert!(!staged.is_full());
        staged.insert("default", guid(2));
        assert!(!staged.is_full(), "a repeated entry does not count");
        staged.insert("default", guid(3));
        assert!(staged.is_full());
        // It is checked only between users, so it may go past the limit meanwhile.
        for n in 4..200 {
            staged.insert("p2", guid(n));
        }
        assert!(staged.is_full());
        let grown = staged.entries.capacity();
        staged.clear();
        assert_eq!(staged.len(), 0);
        assert!(staged.partitions.is_empty());
        assert!(!staged.is_full());
        assert!(!staged.contains("default", &guid(1)));
        assert!(
            staged.entries.capacity() < grown,
            "the table is given back after a large user"
        );
        // A limit below 1 is 1: RESTART after anything staged.
        let mut staged = Staged::new(0);
        assert!(!staged.is_full());
        staged.insert("default", guid(1));
        assert!(staged.is_full());
    }

    /// A connection to a fake replica that answers every line with `OK`; the lines
    /// it got come back when the connection is dropped.
    fn fake_replica(limit: usize) -> (Connection, std::thread::JoinHandle<Vec<String>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            let mut writer = socket.try_clone().unwrap();
            let mut lines = Vec::new();
            for line in io::BufReader::new(socket).lines() {
                let line = line.unwrap();
                writer.write_all(b"OK done\r\n").unwrap();
                lines.push(line);
            }
            lines
        });
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let opts = ConnectOptions {
            host: "127.0.0.1".into(),
            port,
            implicit_tls: false,
            authname: String::new(),
            password: String::new(),
            authzid: None,
            allow_plaintext: false,
            require_tls: false,
            require_compress: false,
            compress_level: 1,
            compress_threads: 1,
            sieve_mailbox: false,
            staged_limit: limit,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            tls: None,
        };
        let conn = Connection::new(Stream::Plain(tcp), "test".into(), &opts);
        (conn, server)
    }

    #[test]
    fn restart_only_when_full_and_nothing_is_deferred() {
        let (mut conn, server) = fake_replica(2);
        conn.mark_staged("default", guid(1));
        assert!(!conn.restart_if_full().unwrap(), "below the limit");
        conn.mark_staged("default", guid(2));
        // An APPLY MAILBOX whose reply is still to be collected may refer to a
        // staged file: no RESTART then.
        conn.unread.push_back(true);
        assert!(!conn.restart_if_full().unwrap());
        assert_eq!(conn.staged_len(), 2);
        conn.unread.clear();
        conn.early.push_back(Err("collected, not taken".into()));
        assert!(!conn.restart_if_full().unwrap());
        conn.early.clear();
        assert!(conn.restart_if_full().unwrap());
        assert_eq!(conn.staged_len(), 0);
        assert!(!conn.is_staged("default", &guid(1)));
        assert_eq!(conn.stats.restarts, 1);
        assert!(!conn.restart_if_full().unwrap(), "empty again");
        // The setter used by tests and the configuration.
        conn.set_staged_limit(1);
        conn.mark_staged("other", guid(3));
        assert!(conn.restart_if_full().unwrap());
        assert_eq!(conn.stats.restarts, 2);
        drop(conn);
        assert_eq!(server.join().unwrap(), ["RESTART", "RESTART"]);
    }
}
