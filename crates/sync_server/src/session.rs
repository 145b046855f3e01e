//! One replication session: greeting, STARTTLS, AUTHENTICATE, COMPRESS, then GET /
//! APPLY / RESTORE until EXIT (spec §1). Replies are Cyrus's, byte for byte.

use std::sync::Arc;

use csync_mailstore::Store;
use csync_protocol::command::{Command, CommandError, needs_auth};
use csync_protocol::decode::{Body, Decoder, Limits, Mode};
use csync_protocol::response::{Greeting, SyncStatus, lines};
use csync_protocol::{compress, sasl};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::conn::{Conn, ConnError, ReadOutcome};
use crate::replica::{Executed, Failure, RECORD_BATCH, Replica, StreamEnd};
use crate::server::Shared;
use crate::staging::Staging;
use csync_auth::{AuthFailure, Authenticator, Step};

/// Who is logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Login {
    None,
    /// Authenticated but not allowed to replicate: everything is refused.
    NotAdmin(String),
    Admin(String),
}

struct Session {
    shared: Arc<Shared>,
    /// Records of the APPLY MAILBOX being executed (counted when it succeeds).
    pending_records: u64,
    auth: Authenticator,
    conn: Conn,
    decoder: Decoder,
    replica: Replica,
    login: Login,
    peer: String,
}

/// Runs a session to its end; errors are logged, never propagated.
pub async fn run(stream: TcpStream, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown".into());
    let span = info_span!("session", peer = %peer, user = tracing::field::Empty);
    async move {
        let config = &shared.config;
        let store = match tokio::task::block_in_place(|| Store::open(config.store.clone())) {
            Ok(mut store) => {
                store.set_changelog(shared.changelog());
                store
            }
            Err(e) => {
                error!("SYNCERROR: cannot open the mailstore: {e}");
                return;
            }
        };
        let auth = match tokio::task::block_in_place(|| crate::auth::authenticator(config)) {
            Ok(a) => a,
            Err(e) => {
                error!("SYNCERROR: authentication is not usable: {e:#}");
                return;
            }
        };
        let limits = Limits {
            max_literal: config.max_literal,
            max_word: config.max_word,
            ..Limits::default()
        };
        let staging = Staging::new(&config.store);
        let mut decoder = Decoder::with_limits(Mode::Commands, limits);
        // A Cyrus client sends a whole mailbox in one APPLY MAILBOX line: its records
        // are taken in batches as they arrive, so memory does not grow with the
        // mailbox (Replica::stream_records).
        decoder.stream_records(RECORD_BATCH);
        let mut session = Session {
            conn: Conn::new(stream, config.timeout),
            decoder,
            replica: Replica::new(store, staging, config.offer_sieve_mailbox),
            login: Login::None,
            peer,
            auth,
            pending_records: 0,
            shared: shared.clone(),
        };
        match session.serve(&mut shutdown).await {
            Ok(()) => debug!("session ended"),
            Err(e) => info!("session ended: {e}"),
        }
        session.replica.restart();
        session.conn.shutdown().await;
    }
    .instrument(span)
    .await
}

impl Session {
    fn greeting(&self) -> Greeting {
        let config = &self.shared.config;
        let tls = self.conn.is_tls();
        Greeting {
            sasl: self
                .auth
                .mechanisms(tls)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            starttls: config.tls_configured() && self.shared.tls.is_some() && !tls,
            compress: config.offer_compress && !tls && !self.conn.is_compressed(),
            sieve_mailbox: config.offer_sieve_mailbox,
            banner: format!(
                "{} Cyrus sync server {}",
                config.servername,
                crate::config::banner_version()
            ),
        }
    }

    async fn serve(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), ConnError> {
        let greeting = self.greeting().encode();
        self.conn.output.extend_from_slice(&greeting);
        self.conn.flush().await?;
        loop {
            let outcome = tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    self.conn.write_line(lines::SHUTDOWN);
                    self.conn.flush().await?;
                    return Ok(());
                }
                r = self.conn.read_line(&mut self.decoder, &mut self.replica.staging) => r,
            };
            match outcome {
                Err(ConnError::Decode(e)) => {
                    // Limits are fatal, as in Cyrus.
                    warn!("SYNCERROR: {e}; closing");
                    self.conn.write_line(&lines::fatal(&e.to_string()));
                    let _ = self.conn.flush().await;
                    return Ok(());
                }
                Err(e) => return Err(e),
                Ok(ReadOutcome::Eof) => return Ok(()),
                Ok(ReadOutcome::Timeout) => {
                    info!("no command for {:?}; closing", self.shared.config.timeout);
                    return Ok(());
                }
                Ok(ReadOutcome::Records) => {
                    // Only a replication admin's records are looked at; anyone else's
                    // line is refused as a whole when it ends, and its batches are
                    // just dropped meanwhile.
                    if matches!(self.login, Login::Admin(_)) {
                        tokio::task::block_in_place(|| {
                            self.replica.stream_records(&mut self.decoder)
                        });
                    }
                    continue;
                }
                Ok(ReadOutcome::Line) => {}
            }
            if !self.handle_line().await? {
                return Ok(());
            }
            self.conn.flush().await?;
        }
    }

    /// Handles one decoded command line; false ends the session.
    async fn handle_line(&mut self) -> Result<bool, ConnError> {
        if self.replica.is_streaming() {
            let end = tokio::task::block_in_place(|| self.replica.finish_stream(&self.decoder));
            match end {
                Some(StreamEnd::Refused(CommandError { reply, detail })) => {
                    debug!("refused: {detail}");
                    self.conn.write_line(&reply);
                    return Ok(true);
                }
                Some(StreamEnd::Applied {
                    mboxname,
                    records,
                    outcome,
                }) => {
                    if outcome.is_ok() {
                        self.shared.metrics.records_applied.inc_by(records);
                    }
                    self.finish(&format!("APPLY MAILBOX {mboxname}"), Vec::new(), outcome);
                    return Ok(true);
                }
                // Malformed: answered below as any malformed line.
                None => {}
            }
        }
        let Some(line) = self.decoder.line() else {
            return Ok(true);
        };
        let word = line.word.to_vec();
        // A non-admin login gets nothing at all (spec §1.6).
        if let Login::NotAdmin(_) = self.login {
            self.conn.write_line(lines::PERMISSION_DENIED);
            return Ok(true);
        }
        if needs_auth(&word) && self.login == Login::None {
            self.conn.write_line(lines::NOT_AUTHENTICATED);
            return Ok(true);
        }
        let parsed = Command::parse(line);
        if let (Body::Malformed(e), Err(_)) = (line.body, &parsed) {
            debug!("malformed line: {e}");
        }
        let command = match parsed {
            Ok(c) => c,
            Err(CommandError { reply, detail }) => {
                if self.login == Login::None && looks_like_imap(line.word, line.body) {
                    // A Cyrus client probing for IMAP (`C01 CAPABILITY`): answer and
                    // hang up so it falls back to csync at once instead of waiting.
                    self.conn.write_line(&reply);
                    self.conn.flush().await?;
                    return Ok(false);
                }
                if let Body::Malformed(e) = line.body
                    && let csync_protocol::DecodeError::File { source, .. } = e
                {
                    warn!("SYNCERROR: upload refused: {source}");
                    self.conn
                        .write_line(&format!("NO IMAP_PROTOCOL_ERROR {source}"));
                    return Ok(true);
                }
                debug!("refused: {detail}");
                self.conn.write_line(&reply);
                return Ok(true);
            }
        };
        match command {
            Command::Compress { algorithm } => {
                let reply =
                    compress::server_reply(Some(algorithm.as_bytes()), self.conn.is_compressed());
                self.conn.output.extend_from_slice(&reply.line);
                self.conn.output.extend_from_slice(b"\r\n");
                self.conn.flush().await?;
                if reply.activate {
                    self.conn
                        .start_compression(self.shared.config.compress_level)?;
                }
            }
            Command::StartTls => return self.starttls().await,
            Command::Authenticate { arguments } => self.authenticate(&arguments).await?,
            other => {
                let name = command_name(&other);
                if let Command::Apply(apply) = &other {
                    match apply {
                        csync_protocol::ApplyCommand::Message(files) => {
                            self.shared
                                .metrics
                                .messages_received
                                .inc_by(files.len() as u64);
                            self.shared
                                .metrics
                                .message_bytes_received
                                .inc_by(files.iter().map(|f| u64::from(f.size)).sum());
                        }
                        csync_protocol::ApplyCommand::Mailbox { mailbox, .. } => {
                            self.pending_records =
                                mailbox.records.as_ref().map_or(0, |r| r.len() as u64);
                        }
                        _ => {}
                    }
                }
                let is_exit = other == Command::Exit;
                let mut out = Vec::new();
                let executed =
                    tokio::task::block_in_place(|| self.replica.execute(other, &mut out));
                match executed {
                    Executed::Status(result) => {
                        if result.is_ok() {
                            self.shared
                                .metrics
                                .records_applied
                                .inc_by(std::mem::take(&mut self.pending_records));
                        }
                        self.pending_records = 0;
                        self.finish(&name, out, result)
                    }
                    Executed::Line(line) => self.conn.write_line(line),
                    Executed::NotMine => self.conn.write_line(lines::UNRECOGNIZED),
                }
                if is_exit {
                    self.conn.flush().await?;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn finish(&mut self, command: &str, data: Vec<u8>, result: Result<(), Failure>) {
        self.conn.output.extend_from_slice(&data);
        let kind: String = command.split(' ').take(2).collect::<Vec<_>>().join(" ");
        let metrics = &self.shared.metrics;
        match &result {
            Ok(()) => {
                metrics.command(&kind, "ok");
                if kind.starts_with("APPLY") {
                    metrics.applied_now();
                }
            }
            Err(f) => {
                let code = f
                    .status
                    .line()
                    .split(' ')
                    .nth(1)
                    .unwrap_or("unknown")
                    .to_owned();
                metrics.command(&kind, &code);
            }
        }
        match result {
            Ok(()) => {
                debug!(command, "OK");
                self.conn.write_line(SyncStatus::Ok.line());
            }
            Err(f) => {
                match f.status {
                    SyncStatus::SyncChanged | SyncStatus::MailboxNonexistent => {
                        info!("SYNCNOTICE: {command}: {}", f.detail)
                    }
                    _ => warn!("SYNCERROR: {command}: {}", f.detail),
                }
                self.conn.write_line(f.status.line());
            }
        }
    }

    async fn starttls(&mut self) -> Result<bool, ConnError> {
        let Some(acceptor) = self.shared.tls.clone() else {
            self.conn.write_line(lines::UNRECOGNIZED);
            return Ok(true);
        };
        if self.login != Login::None {
            self.conn.write_line(lines::STARTTLS_AFTER_AUTH);
            return Ok(true);
        }
        if self.conn.is_tls() {
            self.conn.write_line(lines::STARTTLS_TWICE);
            return Ok(true);
        }
        self.conn.write_line(lines::STARTTLS_BEGIN);
        self.conn.flush().await?;
        if let Err(e) = self.conn.start_tls(&acceptor).await {
            warn!("STARTTLS failed: {e}");
            return Ok(false);
        }
        let greeting = self.greeting().encode();
        self.conn.output.extend_from_slice(&greeting);
        Ok(true)
    }

    async fn authenticate(&mut self, arguments: &str) -> Result<(), ConnError> {
        if self.login != Login::None {
            self.conn.write_line(sasl::BAD_ALREADY_AUTHENTICATED);
            return Ok(());
        }
        let request = match sasl::Authenticate::parse(Some(arguments.as_bytes())) {
            Ok(r) => r,
            Err(e) => {
                self.conn
                    .write_line(e.server_reply().unwrap_or(sasl::BAD_INVALID_MECHANISM));
                return Ok(());
            }
        };
        let tls = self.conn.is_tls();
        let started = tokio::task::block_in_place(|| {
            self.auth
                .start(&request.mechanism, request.initial_response.as_deref(), tls)
        });
        let (mut exchange, mut step) = match started {
            Ok(x) => x,
            Err(failure) => {
                self.fail_login(failure).await?;
                return Ok(());
            }
        };
        loop {
            match step {
                Step::Challenge(challenge) => {
                    sasl::encode_challenge(&challenge, &mut self.conn.output);
                    self.conn.flush().await?;
                    self.decoder.set_mode(Mode::Text);
                    let read = self
                        .conn
                        .read_line(&mut self.decoder, &mut self.replica.staging)
                        .await;
                    self.decoder.set_mode(Mode::Commands);
                    if read? != ReadOutcome::Line {
                        return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    let line = self
                        .decoder
                        .line()
                        .map(|l| l.word.to_vec())
                        .unwrap_or_default();
                    step = match sasl::parse_response(&line) {
                        Ok(bytes) => tokio::task::block_in_place(|| exchange.step(&bytes)),
                        Err(sasl::SaslError::Canceled) => exchange.cancel(),
                        Err(_) => Step::Failure(AuthFailure::BadProtocol),
                    };
                }
                Step::Success { authcid, authzid } => {
                    let admin = crate::auth::is_admin_session(
                        &authcid,
                        authzid.as_deref(),
                        &self.shared.config.admins,
                    );
                    tracing::Span::current().record("user", authcid.as_str());
                    self.shared
                        .metrics
                        .login(if admin { "admin" } else { "not_admin" });
                    if admin {
                        info!(
                            "login: {authcid} (replication admin){}",
                            if tls { " over TLS" } else { "" }
                        );
                        self.login = Login::Admin(authcid);
                    } else {
                        warn!(
                            "login: {authcid}{} is not in admins: every command will be refused",
                            authzid.map(|z| format!(" as {z}")).unwrap_or_default()
                        );
                        self.login = Login::NotAdmin(authcid);
                    }
                    self.conn.write_line(sasl::success_reply(tls, 0));
                    return Ok(());
                }
                Step::Failure(failure) => {
                    self.fail_login(failure).await?;
                    return Ok(());
                }
            }
        }
    }

    async fn fail_login(&mut self, failure: AuthFailure) -> Result<(), ConnError> {
        self.shared.metrics.login("failed");
        warn!("badlogin from {}: {failure}", self.peer);
        let pause = self.shared.config.failed_login_pause;
        if failure.pauses() && !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        self.conn.write_line(&failure.reply());
        Ok(())
    }
}

fn looks_like_imap(word: &[u8], body: Body<'_>) -> bool {
    let Body::Text(text) = body else {
        return false;
    };
    !word.is_empty()
        && word.iter().all(|b| b.is_ascii_alphanumeric())
        && (text.eq_ignore_ascii_case(b"CAPABILITY")
            || text.len() >= 6 && text[..6].eq_ignore_ascii_case(b"LOGIN "))
}

fn command_name(command: &Command) -> String {
    match command {
        Command::Get(get) => format!("GET {}", get_name(get)),
        Command::Apply(apply) => format!("APPLY {}", apply_name(apply)),
        Command::Restore(_) => "RESTORE MAILBOX".into(),
        Command::Noop => "NOOP".into(),
        Command::Restart => "RESTART".into(),
        Command::Exit => "EXIT".into(),
        Command::Authenticate { .. } => "AUTHENTICATE".into(),
        Command::StartTls => "STARTTLS".into(),
        Command::Compress { .. } => "COMPRESS".into(),
    }
}

fn get_name(get: &csync_protocol::GetCommand) -> &'static str {
    use csync_protocol::GetCommand as G;
    match get {
        G::User(_) => "USER",
        G::Mailboxes(_) => "MAILBOXES",
        G::UniqueIds(_) => "UNIQUEIDS",
        G::FullMailbox(_) => "FULLMAILBOX",
        G::Meta(_) => "META",
        G::Quota(_) => "QUOTA",
        G::Annotation(_) => "ANNOTATION",
        G::Fetch(_) => "FETCH",
        G::FetchSieve { .. } => "FETCH_SIEVE",
    }
}

fn apply_name(apply: &csync_protocol::ApplyCommand) -> String {
    use csync_protocol::ApplyCommand as A;
    match apply {
        A::Reserve(r) => format!("RESERVE ({} GUIDs)", r.guids.len()),
        A::Message(files) => format!("MESSAGE ({} files)", files.len()),
        A::Mailbox { mailbox, .. } => format!("MAILBOX {}", mailbox.mboxname),
        A::Unmailbox { mboxname, .. } => format!("UNMAILBOX {mboxname}"),
        A::Rename { rename, .. } => {
            format!("RENAME {} {}", rename.old_mboxname, rename.new_mboxname)
        }
        A::Expunge(e) => format!("EXPUNGE {}", e.mboxname),
        A::Seen { userid, .. } => format!("SEEN {userid}"),
        A::Sub { userid, mboxname } => format!("SUB {userid} {mboxname}"),
        A::Unsub { userid, mboxname } => format!("UNSUB {userid} {mboxname}"),
        A::Quota(q) => format!("QUOTA {}", q.root),
        A::Unquota(r) => format!("UNQUOTA {r}"),
        A::Annotation(a) => format!("ANNOTATION {} {}", a.mboxname, a.entry),
        A::Unannotation(a) => format!("UNANNOTATION {} {}", a.mboxname, a.entry),
        A::Sieve(s) => format!("SIEVE {} {}", s.userid, s.filename),
        A::Unsieve { userid, filename } => format!("UNSIEVE {userid} {filename}"),
        A::ActivateSieve { userid, filename } => format!("ACTIVATE_SIEVE {userid} {filename}"),
        A::UnactivateSieve { userid } => format!("UNACTIVATE_SIEVE {userid}"),
        A::Unuser { userid, .. } => format!("UNUSER {userid}"),
        A::Force => "FORCE".into(),
        A::Capabilities(c) => format!("CAPABILITIES ({})", c.join(" ")),
    }
}
