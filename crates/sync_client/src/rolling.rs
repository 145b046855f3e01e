//! Rolling replication (`-r`, `-R`, `-1`, `-f` with a log; spec §4.9, §4.10): follow
//! the channel's sync_log and push what it names to the replica.
//!
//! The loop, as Cyrus's `do_daemon`: shutdown file → session age (`RESTART`, then a
//! new connection) → take a log file ([`LogReader::begin`]: a leftover `log-run`
//! first) → [`coalesce`] it into a [`Plan`] → execute the plan in §4.9 step 3 order with
//! the [`Syncer`] → delete `log-run` only once everything in it is done.
//!
//! What csync does beyond Cyrus 3.6:
//!
//! * **Wake-up on write.** The log directory is watched (inotify through `notify`),
//!   so a committed change is picked up within milliseconds; `sync_repeat_interval`
//!   (`-d`) stays the fallback poll (inotify misses writes over NFS) and, when
//!   non-zero, the batching window: runs start at most once per interval. With 0,
//!   every write starts a run at once.
//! * **Reconnects back off** from `csync_reconnect_initial` (15 s) doubling up to
//!   `sync_reconnect_maxwait`, forever unless `-o`. A failed run is retried at once
//!   the first time (the replica may just have restarted), then with the same backoff.
//! * **One failing user never stalls the others.** Failures are promoted as in Cyrus
//!   (mailbox batch → USER, SEEN/SUB → META, META → USER); a USER sync that still
//!   fails is retried a few times within the run, and then the user is quarantined
//!   (see [`quarantine`]): its records leave the log for `quarantine-log`, it is
//!   listed in `quarantine`, and later runs skip it until it is released. A user
//!   whose work keeps killing the connection is quarantined the same way: five runs in
//!   a row lost a live connection while working on it, and each time the replica took
//!   the very next connection (so it was the session that died, not the replica; a
//!   connection that was idle before the run and fails at once blames nobody). When two or more users fail and nothing at all
//!   succeeds, the replica may be at fault: the run is retried later, and the users
//!   are quarantined only if that happens five times in a row (so two broken users
//!   alone in a log cannot stall everyone behind them for long).
//! * **Nothing is lost.** The work file stays until its work succeeded; deferred and
//!   quarantined records are written (fsync'd) to a log before the work file goes.
//! * **Signals.** SIGTERM, SIGINT and SIGQUIT finish the current item, keep
//!   `log-run` when work is left, send `EXIT` and exit 0; a second signal exits at once.

pub mod lock;
pub mod quarantine;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use csync_mailstore::Store;
use csync_protocol::command::{ApplyCommand, Command};
use csync_protocol::response::SyncStatus;
use csync_synclog::{Channel, LogReader, Plan, SyncLog, SyncLogError, SyncLogRecord, coalesce};
use tracing::{debug, error, info, warn};

use crate::config::ClientConfig;
use crate::conn::{ConnError, Connection};
use crate::progress::Progress;
use crate::sync::{SyncError, SyncOptions, SyncResult, Syncer};
use lock::{UserLock, UserLocks};
use quarantine::{Quarantine, QuarantineEntry, QuarantineError, Subject, subjects_of};

/// Environment variable that shortens the first reconnect wait (milliseconds), for
/// tests; `csync_reconnect_initial` is the imapd.conf key (seconds).
pub const RECONNECT_INITIAL_ENV: &str = "CSYNC_RECONNECT_INITIAL_MS";

/// The longest the loop ever waits at once (an "uncapped" backoff stops growing here).
const LONGEST_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// `t + d`, with `d` at most [`LONGEST_WAIT`] so that it cannot overflow.
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d.min(LONGEST_WAIT)).unwrap_or(t)
}

/// Why the loop woke up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Something was written to the log directory.
    Log,
    /// A termination signal arrived.
    Signal,
}

/// The stop flag and the wake-up channel shared by the signal thread, the log
/// watcher and the loop.
#[derive(Debug)]
pub struct Control {
    stop: Arc<AtomicBool>,
    tx: Sender<Wake>,
    rx: Receiver<Wake>,
}

impl Default for Control {
    fn default() -> Self {
        Control::new()
    }
}

impl Control {
    pub fn new() -> Control {
        let (tx, rx) = std::sync::mpsc::channel();
        Control {
            stop: Arc::new(AtomicBool::new(false)),
            tx,
            rx,
        }
    }

    /// Blocks SIGTERM, SIGINT and SIGQUIT in the calling thread (call it before any
    /// other thread starts, so every thread inherits the mask) and waits for them in a
    /// thread of their own: the first asks the loop to stop after the current item, a
    /// second one exits at once (exit status 1; the work file stays).
    pub fn handle_signals(&self) -> Result<(), RollingError> {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT] {
            set.add(s);
        }
        set.thread_block()
            .map_err(|e| RollingError::Signals(std::io::Error::from(e)))?;
        let stop = self.stop.clone();
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                loop {
                    match set.wait() {
                        Ok(signal) => {
                            if stop.swap(true, Ordering::SeqCst) {
                                error!("{signal} again: exiting now; the sync log work file stays");
                                std::process::exit(1);
                            }
                            warn!("{signal}: stopping after the current item");
                            let _ = tx.send(Wake::Signal);
                        }
                        Err(e) => {
                            error!("waiting for signals: {e}");
                            return;
                        }
                    }
                }
            })
            .map_err(RollingError::Signals)?;
        Ok(())
    }

    /// The flag a signal sets.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// A sender to wake the loop (a test, another thread).
    pub fn waker(&self) -> Sender<Wake> {
        self.tx.clone()
    }
}

/// How rolling mode runs.
#[derive(Clone, Debug)]
pub struct RollingOptions {
    /// `-n`: the channel whose log is read and where deferred work is re-logged.
    pub channel: Channel,
    /// `configdirectory`.
    pub config_dir: PathBuf,
    /// `deletedprefix` (owners of `DELETED.*` names, §8.2).
    pub deleted_prefix: String,
    /// `-1`: process one log file, then exit.
    pub once: bool,
    /// `-t`: session age after which the client sends `RESTART` and reconnects.
    pub session_timeout: Duration,
    /// `-d` / `sync_repeat_interval`: minimum time between runs and fallback poll.
    pub interval: Duration,
    /// `-F` / `sync_shutdown_file`.
    pub shutdown_file: Option<PathBuf>,
    /// `-o`: do not retry a failed connection; exit instead.
    pub connect_once: bool,
    /// `-N`: skip (and re-log) users whose sync lock another sync_client holds.
    pub skip_locked: bool,
    /// First reconnect wait; doubles up to `reconnect_max`.
    pub reconnect_initial: Duration,
    /// `sync_reconnect_maxwait` (`None`: uncapped).
    pub reconnect_max: Option<Duration>,
    /// `csync_quarantine_retry`: quarantined subjects are retried after this long.
    pub quarantine_retry: Option<Duration>,
    /// Tries of a USER (or shared mailbox) sync within one run before quarantine.
    pub attempts: u32,
    /// Wait before the second try; doubles for each further one.
    pub retry_delay: Duration,
    /// Aborted runs in a row on the same subject before it is quarantined.
    pub strike_limit: u32,
    /// Watch the log directory for writes (off: poll only).
    pub watch: bool,
}

impl RollingOptions {
    /// The defaults of Cyrus 3.6 and csync for a client configuration.
    pub fn new(
        channel: Channel,
        config_dir: PathBuf,
        deleted_prefix: &str,
        client: &ClientConfig,
    ) -> RollingOptions {
        let reconnect_initial = std::env::var(RECONNECT_INITIAL_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(client.reconnect_initial, Duration::from_millis);
        RollingOptions {
            channel,
            config_dir,
            deleted_prefix: deleted_prefix.to_owned(),
            once: false,
            session_timeout: Duration::from_secs(600),
            interval: client.repeat_interval,
            shutdown_file: client.shutdown_file.clone(),
            connect_once: false,
            skip_locked: false,
            reconnect_initial,
            reconnect_max: client.reconnect_maxwait,
            quarantine_retry: client.quarantine_retry,
            attempts: 3,
            retry_delay: Duration::from_millis(250),
            strike_limit: 5,
            watch: true,
        }
    }

    /// The channel's log directory (`<configdirectory>/sync[/<channel>]`).
    pub fn log_dir(&self) -> PathBuf {
        let log = csync_synclog::channel_log_path(&self.config_dir, &self.channel);
        log.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// How rolling mode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown file, `-1` done, `-f` file done without failures.
    Done,
    /// `-f` or `-1` finished but something failed (or was quarantined).
    Failed,
    /// A termination signal.
    Stopped,
}

/// What stops rolling mode.
#[derive(Debug, thiserror::Error)]
pub enum RollingError {
    #[error("cannot connect to the replica {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: ConnError,
    },
    #[error(transparent)]
    SyncLog(#[from] SyncLogError),
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
    #[error("signal handling: {0}")]
    Signals(#[source] std::io::Error),
    #[error("{what} failed {times} times in a row; giving up: {error}")]
    GaveUp {
        what: String,
        times: u32,
        error: String,
    },
}

/// What one processed log file did.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub records: usize,
    pub users: usize,
    pub shared: usize,
    pub mailboxes: u64,
    pub messages: u64,
    pub bytes: u64,
    pub deferred: usize,
    pub held: usize,
    pub quarantined: Vec<Subject>,
    /// `-f`: subjects that failed (nothing is quarantined there).
    pub failed: Vec<Subject>,
    pub elapsed: Duration,
}

enum RunEnd {
    Complete(RunReport),
    Aborted {
        error: String,
        /// Who the run was working on: they get a strike each.
        blame: Vec<(Subject, FailureInfo)>,
        connection_ok: bool,
    },
    Stopped,
}

enum Abort {
    Stopped,
    Failed {
        error: String,
        subject: Option<Subject>,
    },
}

/// The outcome of one item.
enum Outcome {
    Done,
    /// Locked (by another sync_client with `-N`, or on the replica): re-logged.
    Busy,
    Failed(SyncError),
}

/// What a failure says, for the log and the quarantine file.
#[derive(Clone, Debug)]
struct FailureInfo {
    mailbox: String,
    command: String,
    reply: String,
}

impl FailureInfo {
    fn of(e: &SyncError, fallback_mailbox: &str) -> FailureInfo {
        match e {
            SyncError::Replica {
                command,
                target,
                reply,
                ..
            } => FailureInfo {
                mailbox: target.clone(),
                command: command.clone(),
                reply: reply.clone(),
            },
            other => FailureInfo {
                mailbox: fallback_mailbox.to_owned(),
                command: "-".into(),
                reply: other.to_string(),
            },
        }
    }
}

#[derive(Default)]
struct RunCtx {
    quarantined: BTreeSet<Subject>,
    records: Vec<SyncLogRecord>,
    successes: u64,
    users: BTreeSet<String>,
    shared: BTreeSet<String>,
    deferred: Vec<SyncLogRecord>,
    candidates: Vec<(Subject, FailureInfo)>,
}

enum Locking {
    Held(Option<UserLock>),
    Busy,
}

/// The rolling client: the store, the replica connection and the channel's files.
pub struct Rolling<'a> {
    store: &'a mut Store,
    client: &'a ClientConfig,
    sync_opts: SyncOptions,
    opts: RollingOptions,
    control: Control,
    conn: Option<Connection>,
    connected_at: Instant,
    watcher: Option<notify::RecommendedWatcher>,
    pending: bool,
    /// The connection was made for the current run (it cannot be a stale one).
    fresh: bool,
    /// Who a run that lost its connection was working on: blamed only if the replica
    /// takes the very next connection (else it was the replica that went away).
    suspects: Vec<(Subject, FailureInfo)>,
    log: SyncLog,
    reader: LogReader,
    quarantine: Quarantine,
    quarantine_signature: Option<Option<(u64, std::time::SystemTime)>>,
    locks: UserLocks,
    strikes: HashMap<Subject, u32>,
    aborts: u32,
    progress: Progress,
    metrics: Option<std::sync::Arc<crate::metrics::ClientMetrics>>,
}

impl std::fmt::Debug for Rolling<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rolling")
            .field("channel", &self.opts.channel)
            .field("log", &self.reader.log_path())
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl<'a> Rolling<'a> {
    /// Counts runs, messages and errors into `metrics` (served by
    /// [`crate::metrics::serve`]).
    pub fn set_metrics(&mut self, metrics: std::sync::Arc<crate::metrics::ClientMetrics>) {
        self.metrics = Some(metrics);
    }

    /// A rolling client. `sync_opts.partition` is ignored (rolling mode keeps each
    /// mailbox's partition, as Cyrus).
    pub fn new(
        store: &'a mut Store,
        client: &'a ClientConfig,
        sync_opts: &SyncOptions,
        opts: RollingOptions,
        control: Control,
    ) -> Rolling<'a> {
        let log_path = csync_synclog::channel_log_path(&opts.config_dir, &opts.channel);
        let log_dir = opts.log_dir();
        Rolling {
            store,
            client,
            sync_opts: SyncOptions {
                partition: None,
                ..sync_opts.clone()
            },
            control,
            conn: None,
            connected_at: Instant::now(),
            watcher: None,
            pending: false,
            fresh: false,
            suspects: Vec::new(),
            log: SyncLog::new(&opts.config_dir, vec![opts.channel.clone()]),
            reader: LogReader::new(log_path),
            quarantine: Quarantine::new(&log_dir, &opts.deleted_prefix),
            quarantine_signature: None,
            locks: UserLocks::new(&opts.config_dir, &client.connect.host, client.connect.port),
            strikes: HashMap::new(),
            aborts: 0,
            progress: Progress::new(false),
            metrics: None,
            opts,
        }
    }

    /// The channel's quarantine.
    pub fn quarantine(&self) -> &Quarantine {
        &self.quarantine
    }

    fn stopped(&self) -> bool {
        self.control.stop.load(Ordering::SeqCst)
    }

    /// Waits `d`, waking early only for a stop. Returns true when stopping.
    fn sleep(&mut self, d: Duration) -> bool {
        self.sleep_until(after(Instant::now(), d))
    }

    fn sleep_until(&mut self, until: Instant) -> bool {
        loop {
            if self.stopped() {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            match self.control.rx.recv_timeout(until - now) {
                Ok(Wake::Log) => self.pending = true,
                Ok(Wake::Signal) => {}
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(until - now),
            }
        }
    }

    /// Forgets wake-ups that the next [`LogReader::begin`] covers.
    fn drain(&mut self) {
        while self.control.rx.try_recv().is_ok() {}
        self.pending = false;
    }

    /// How often to look for a log without being woken.
    fn poll_period(&self) -> Duration {
        if self.watcher.is_some() {
            self.opts.interval.max(Duration::from_secs(1))
        } else if self.opts.interval.is_zero() {
            Duration::from_millis(100)
        } else {
            self.opts.interval
        }
    }

    /// Waits for a write to the log (no sooner than `interval` after the last run) or
    /// for the poll period to pass.
    fn wait_for_work(&mut self, last_run: Option<Instant>) {
        let start = Instant::now();
        let deadline = after(start, self.poll_period());
        let earliest = last_run.map_or(start, |t| after(t, self.opts.interval));
        loop {
            if self.stopped() {
                return;
            }
            let now = Instant::now();
            if (self.pending && now >= earliest) || now >= deadline {
                return;
            }
            let until = if self.pending {
                earliest.min(deadline)
            } else {
                deadline
            };
            match self
                .control
                .rx
                .recv_timeout(until.saturating_duration_since(now))
            {
                Ok(Wake::Log) => self.pending = true,
                Ok(Wake::Signal) => return,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(until.saturating_duration_since(now))
                }
            }
        }
    }

    /// Starts watching the log directory (creating it, as writers would).
    fn watch(&mut self) {
        if !self.opts.watch || self.watcher.is_some() {
            return;
        }
        use notify::Watcher;
        let log_path = self.reader.log_path().to_owned();
        let Some(dir) = log_path.parent().map(Path::to_path_buf) else {
            return;
        };
        if let Err(e) = DirBuilder::new().recursive(true).mode(0o755).create(&dir) {
            warn!(
                "cannot create {}: {e}; polling every {:?}",
                dir.display(),
                self.poll_period()
            );
            return;
        }
        let name: OsString = log_path.file_name().map(OsString::from).unwrap_or_default();
        let tx = self.control.tx.clone();
        let handler = move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                let ours = event
                    .paths
                    .iter()
                    .any(|p| p.file_name() == Some(name.as_os_str()));
                if (ours && wakes(&event.kind)) || event.need_rescan() {
                    let _ = tx.send(Wake::Log);
                }
            }
            Err(e) => {
                warn!("watching the sync log: {e}");
                let _ = tx.send(Wake::Log);
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(mut watcher) => match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    debug!("watching {}", dir.display());
                    self.watcher = Some(watcher);
                }
                Err(e) => warn!(
                    "cannot watch {}: {e}; polling every {:?}",
                    dir.display(),
                    self.poll_period()
                ),
            },
            Err(e) => warn!(
                "cannot watch the sync log: {e}; polling every {:?}",
                self.poll_period()
            ),
        }
    }

    fn connect(&self) -> Result<Connection, ConnError> {
        let mut conn = Connection::connect(&self.client.connect)?;
        if self.sync_opts.no_copyback {
            let reply = conn.command(&Command::Apply(ApplyCommand::Force))?;
            if reply.status() != SyncStatus::Ok {
                return Err(ConnError::Protocol(format!(
                    "APPLY FORCE: {}",
                    reply.text()
                )));
            }
        }
        Ok(conn)
    }

    /// Connects if not connected, retrying with backoff (once only with `-o`).
    /// `Ok(false)`: stopped while waiting.
    fn ensure_connected(&mut self) -> Result<bool, RollingError> {
        if self.conn.is_some() {
            return Ok(true);
        }
        let mut delay = self.opts.reconnect_initial;
        let mut first = true;
        loop {
            if self.stopped() {
                return Ok(false);
            }
            match self.connect() {
                Ok(conn) => {
                    info!(
                        target = conn.target(),
                        tls = conn.tls,
                        compressed = conn.compressed,
                        "connected to the replica"
                    );
                    self.conn = Some(conn);
                    if let Some(m) = &self.metrics {
                        m.connected.set(1);
                    }
                    self.connected_at = Instant::now();
                    self.fresh = true;
                    // The replica stayed up while our session died: its work is the
                    // suspect (a Cyrus replica process dies on some bad input).
                    let suspects = std::mem::take(&mut self.suspects);
                    if first {
                        self.blame(suspects);
                    }
                    return Ok(true);
                }
                Err(source) => {
                    first = false;
                    if !self.suspects.is_empty() {
                        debug!("the replica itself went away: nobody to blame");
                        self.suspects.clear();
                    }
                    let target =
                        format!("{}:{}", self.client.connect.host, self.client.connect.port);
                    if self.opts.connect_once {
                        return Err(RollingError::Connect { target, source });
                    }
                    warn!(
                        "cannot connect to the replica {target}: {source}; retrying in {delay:?}"
                    );
                    if self.sleep(delay) {
                        return Ok(false);
                    }
                    delay = self.cap(delay.saturating_mul(2));
                }
            }
        }
    }

    fn cap(&self, d: Duration) -> Duration {
        d.min(self.opts.reconnect_max.unwrap_or(LONGEST_WAIT))
    }

    /// The wait before retrying after `self.aborts` failed runs in a row: none after the
    /// first (the replica may just have restarted), then the reconnect backoff.
    fn abort_backoff(&self) -> Duration {
        if self.aborts <= 1 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (self.aborts - 2).min(20);
        self.cap(self.opts.reconnect_initial.saturating_mul(factor))
    }

    /// Drops the connection; `EXIT` first when it is believed alive.
    fn disconnect(&mut self, graceful: bool) {
        if let Some(m) = &self.metrics {
            m.connected.set(0);
        }
        if let Some(conn) = self.conn.take()
            && graceful
            && let Err(e) = conn.exit()
        {
            debug!("EXIT: {e}");
        }
    }

    fn shutdown(&mut self, exit: Exit) -> Exit {
        self.disconnect(true);
        info!("sync_client stopped");
        exit
    }

    fn check_session_age(&mut self) {
        if self.conn.is_none() || self.connected_at.elapsed() < self.opts.session_timeout {
            return;
        }
        info!(
            "session older than {}s: RESTART and reconnect",
            self.opts.session_timeout.as_secs()
        );
        if let Some(conn) = self.conn.as_mut()
            && let Err(e) = conn.restart()
        {
            warn!("RESTART: {e}");
            self.disconnect(false);
            return;
        }
        self.disconnect(true);
    }

    fn shutdown_file_present(&self) -> bool {
        let Some(file) = &self.opts.shutdown_file else {
            return false;
        };
        if !file.exists() {
            return false;
        }
        info!("shutdown file {} found: exiting", file.display());
        if let Err(e) = std::fs::remove_file(file) {
            warn!("removing the shutdown file {}: {e}", file.display());
        }
        true
    }

    /// Releases quarantined subjects that are due (or whose line an admin deleted).
    fn maintain_quarantine(&mut self) {
        let signature = self.quarantine.signature();
        let edited = self.quarantine_signature != Some(signature);
        match self.quarantine.release_due(
            self.opts.quarantine_retry,
            edited,
            &self.log,
            &self.opts.channel,
        ) {
            Ok(released) => {
                for subject in released {
                    warn!("SYNCNOTICE: {subject} released from quarantine; syncing it again");
                }
            }
            Err(e) => warn!("quarantine: {e}"),
        }
        self.quarantine_signature = Some(self.quarantine.signature());
    }

    /// Rolling replication until the shutdown file, a signal, or (`-1`) one log file.
    pub fn run(&mut self) -> Result<Exit, RollingError> {
        self.watch();
        let mut last_run: Option<Instant> = None;
        let mut not_before: Option<Instant> = None;
        loop {
            if self.stopped() {
                return Ok(self.shutdown(Exit::Stopped));
            }
            if self.shutdown_file_present() {
                return Ok(self.shutdown(Exit::Done));
            }
            if let Some(t) = not_before.take()
                && self.sleep_until(t)
            {
                continue;
            }
            self.check_session_age();
            self.maintain_quarantine();
            self.drain();
            let started = Instant::now();
            let run = match self.reader.begin() {
                Ok(Some(run)) => run,
                Ok(None) => {
                    if self.opts.once {
                        info!("no sync log to process");
                        return Ok(self.shutdown(Exit::Done));
                    }
                    self.wait_for_work(last_run);
                    continue;
                }
                Err(e) => {
                    error!("SYNCERROR: taking the sync log: {e}");
                    not_before = Some(after(Instant::now(), self.poll_period()));
                    continue;
                }
            };
            if run.is_reprocessing() {
                warn!("Reprocessing sync log file {}", run.path().display());
            }
            for skipped in &run.contents().skipped {
                warn!(
                    "{}:{}: skipped: {}",
                    run.path().display(),
                    skipped.line,
                    skipped.reason
                );
            }
            if !self.ensure_connected()? {
                // The work file stays for the next start.
                return Ok(self.shutdown(Exit::Stopped));
            }
            match self.process(run.records(), true) {
                RunEnd::Complete(mut report) => {
                    if let Some(m) = &self.metrics {
                        m.succeeded(report.records, report.messages, report.bytes);
                        for _ in &report.quarantined {
                            m.error("quarantined");
                        }
                    }
                    let path = run.path().to_owned();
                    if let Err(e) = run.finish() {
                        error!("SYNCERROR: {e}; it will be processed again");
                    }
                    report.elapsed = started.elapsed();
                    self.aborts = 0;
                    self.strikes.clear();
                    log_report(&path, &report);
                    last_run = Some(started);
                    if report.deferred > 0 {
                        // Do not spin on our own re-logged records.
                        not_before = Some(after(
                            Instant::now(),
                            self.opts.interval.max(Duration::from_secs(1)),
                        ));
                    }
                    if self.opts.once {
                        let exit = if report.quarantined.is_empty() {
                            Exit::Done
                        } else {
                            Exit::Failed
                        };
                        return Ok(self.shutdown(exit));
                    }
                    if not_before.is_none() {
                        // Writes made before the watch began (or missed) are found by
                        // looking once more, no sooner than the interval allows.
                        self.pending = true;
                        self.wait_for_work(last_run);
                    }
                }
                RunEnd::Aborted {
                    error,
                    blame,
                    connection_ok,
                } => {
                    if let Some(m) = &self.metrics {
                        m.error(if connection_ok {
                            "run_refused"
                        } else {
                            "connection_lost"
                        });
                    }
                    error!(
                        "SYNCERROR: Processing sync log file {} failed: {error}",
                        run.path().display()
                    );
                    drop(run);
                    self.disconnect(connection_ok);
                    self.aborts += 1;
                    if connection_ok {
                        // The replica answered: it refused, it is there.
                        self.blame(blame);
                    } else {
                        self.suspects = blame;
                    }
                    let wait = self.abort_backoff();
                    if !wait.is_zero() {
                        warn!("{} failed runs in a row; next try in {wait:?}", self.aborts);
                    }
                    not_before = Some(after(Instant::now(), wait));
                }
                RunEnd::Stopped => {
                    drop(run);
                    return Ok(self.shutdown(Exit::Stopped));
                }
            }
        }
    }

    /// `-f`: processes these records once, without quarantine (failures make the exit
    /// status 1). A lost connection reconnects and starts the file again.
    pub fn run_records(&mut self, records: &[SyncLogRecord]) -> Result<Exit, RollingError> {
        let started = Instant::now();
        loop {
            if !self.ensure_connected()? {
                return Ok(self.shutdown(Exit::Stopped));
            }
            match self.process(records, false) {
                RunEnd::Complete(mut report) => {
                    report.elapsed = started.elapsed();
                    log_report(Path::new("-f input"), &report);
                    for subject in &report.failed {
                        error!("SYNCERROR: {subject}: not replicated");
                    }
                    let exit = if report.failed.is_empty() {
                        Exit::Done
                    } else {
                        Exit::Failed
                    };
                    return Ok(self.shutdown(exit));
                }
                RunEnd::Aborted {
                    error,
                    connection_ok,
                    ..
                } => {
                    error!("SYNCERROR: processing the input failed: {error}");
                    self.disconnect(connection_ok);
                    self.aborts += 1;
                    if self.aborts >= self.opts.strike_limit.max(1) {
                        return Err(RollingError::GaveUp {
                            what: "processing the input".into(),
                            times: self.aborts,
                            error,
                        });
                    }
                    let wait = self.abort_backoff();
                    if self.sleep(wait) {
                        return Ok(self.shutdown(Exit::Stopped));
                    }
                }
                RunEnd::Stopped => return Ok(self.shutdown(Exit::Stopped)),
            }
        }
    }

    /// Strikes against each of `blame`; a quarantine resets the backoff, since the
    /// culprit's records leave the work file on the next try.
    fn blame(&mut self, blame: Vec<(Subject, FailureInfo)>) {
        let mut quarantined = false;
        for (subject, info) in blame {
            match self.strike(subject, info) {
                Ok(q) => quarantined |= q,
                Err(e) => error!("SYNCERROR: quarantine: {e}"),
            }
        }
        if quarantined {
            self.aborts = 0;
        }
    }

    /// A run aborted because of `subject` (the connection died while working on it,
    /// or it failed in a run where nothing succeeded): after `strike_limit` such runs in
    /// a row it is quarantined; its records move when the work file is taken again.
    /// Returns whether it was.
    fn strike(&mut self, subject: Subject, info: FailureInfo) -> Result<bool, QuarantineError> {
        let count = self.strikes.entry(subject.clone()).or_insert(0);
        *count += 1;
        if *count < self.opts.strike_limit.max(1) {
            info!(
                "{subject}: strike {count} of {}: {}",
                self.opts.strike_limit, info.reply
            );
            return Ok(false);
        }
        let count = *count;
        self.strikes.remove(&subject);
        let entry =
            QuarantineEntry::new(subject.clone(), &info.mailbox, &info.command, &info.reply);
        self.quarantine.add(entry, &[])?;
        error!(
            user = subject.user().unwrap_or_default(),
            mailbox = %info.mailbox,
            command = %info.command,
            reply = %info.reply,
            "SYNCERROR: {subject} quarantined: {count} runs in a row failed on it; \
             release with `sync_client --release {}`",
            release_name(&subject)
        );
        Ok(true)
    }

    /// Takes `subject`'s sync lock: waits for it, or with `-N` reports it busy.
    fn lock(&mut self, subject: &Subject) -> Result<Locking, Abort> {
        loop {
            match self.locks.try_lock(subject) {
                Ok(Some(lock)) => return Ok(Locking::Held(Some(lock))),
                Ok(None) if self.opts.skip_locked => {
                    info!("{subject} is locked by another sync_client: skipped (-N), re-logged");
                    return Ok(Locking::Busy);
                }
                Ok(None) => {
                    if self.sleep(Duration::from_millis(50)) {
                        return Err(Abort::Stopped);
                    }
                }
                Err(e) => {
                    warn!(
                        "cannot take the sync lock of {subject} in {}: {e}; going on without it",
                        self.locks.dir().display()
                    );
                    return Ok(Locking::Held(None));
                }
            }
        }
    }

    /// One item: lock, run `op` with a [`Syncer`], classify the result.
    fn item(
        &mut self,
        ctx: &mut RunCtx,
        subject: &Subject,
        op: &mut dyn FnMut(&mut Syncer<'_>) -> SyncResult<()>,
    ) -> Result<Outcome, Abort> {
        if self.stopped() {
            return Err(Abort::Stopped);
        }
        let _lock = match self.lock(subject)? {
            Locking::Held(lock) => lock,
            Locking::Busy => return Ok(Outcome::Busy),
        };
        let Some(conn) = self.conn.as_mut() else {
            return Err(Abort::Failed {
                error: "not connected".into(),
                subject: None,
            });
        };
        let result = {
            let mut syncer = Syncer {
                store: &mut *self.store,
                conn,
                opts: &self.sync_opts,
                progress: &mut self.progress,
            };
            op(&mut syncer)
        };
        match result {
            Ok(()) => {
                ctx.successes += 1;
                self.strikes.remove(subject);
                match subject {
                    Subject::User(u) => ctx.users.insert(u.clone()),
                    Subject::Shared(m) => ctx.shared.insert(m.clone()),
                };
                Ok(Outcome::Done)
            }
            Err(e) if e.is_connection() => Err(Abort::Failed {
                error: format!("{subject}: {e}"),
                subject: Some(subject.clone()),
            }),
            Err(e) if e.status() == Some(SyncStatus::MailboxLocked) => {
                info!("{subject}: the replica says locked: re-logged");
                Ok(Outcome::Busy)
            }
            Err(e) => Ok(Outcome::Failed(e)),
        }
    }

    /// An item tried up to `attempts` times, waiting `retry_delay` (doubling) between.
    fn item_with_retries(
        &mut self,
        ctx: &mut RunCtx,
        subject: &Subject,
        op: &mut dyn FnMut(&mut Syncer<'_>) -> SyncResult<()>,
    ) -> Result<Outcome, Abort> {
        let attempts = self.opts.attempts.max(1);
        let mut delay = self.opts.retry_delay;
        let mut attempt = 1;
        loop {
            match self.item(ctx, subject, op)? {
                Outcome::Failed(e) if attempt < attempts => {
                    warn!("{subject}: try {attempt} of {attempts} failed: {e}; again in {delay:?}");
                    if self.sleep(delay) {
                        return Err(Abort::Stopped);
                    }
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
                other => return Ok(other),
            }
        }
    }

    /// Processes one log file's records (§4.9).
    fn process(&mut self, records: &[SyncLogRecord], rolling: bool) -> RunEnd {
        self.progress = Progress::new(false);
        let mut ctx = RunCtx::default();
        // A connection that was idle before this run and dies at its first command
        // was dead already: that is nobody's fault.
        let fresh = std::mem::take(&mut self.fresh);
        let bytes_in = self.conn.as_ref().map_or(0, |c| c.stats.wire_bytes_in);
        let abort = |error: String| RunEnd::Aborted {
            error,
            blame: Vec::new(),
            connection_ok: true,
        };
        if rolling {
            match self.quarantine.subjects() {
                Ok(s) => ctx.quarantined = s,
                Err(e) => return abort(e.to_string()),
            }
        }
        let prefix = self.opts.deleted_prefix.clone();
        let mut held: Vec<SyncLogRecord> = Vec::new();
        for record in records {
            let subjects = subjects_of(record, &prefix);
            let quarantined = subjects
                .iter()
                .filter(|s| ctx.quarantined.contains(s))
                .count();
            if quarantined > 0 {
                held.push(record.clone());
            }
            if quarantined < subjects.len() || subjects.is_empty() {
                ctx.records.push(record.clone());
            }
        }
        if !held.is_empty() {
            if let Err(e) = self.quarantine.hold(&held) {
                return abort(e.to_string());
            }
            info!(
                "{} records of quarantined users kept in {}",
                held.len(),
                self.quarantine.held_path().display()
            );
        }
        let plan = coalesce(ctx.records.iter(), &prefix);
        match self.execute(&plan, &mut ctx) {
            Ok(()) => {}
            Err(Abort::Stopped) => return RunEnd::Stopped,
            Err(Abort::Failed { error, subject }) => {
                let alive_in_run = fresh
                    || self
                        .conn
                        .as_ref()
                        .is_some_and(|c| c.stats.wire_bytes_in > bytes_in);
                let blame = subject
                    .filter(|_| alive_in_run)
                    .map(|s| {
                        let info = FailureInfo {
                            mailbox: String::new(),
                            command: "-".into(),
                            reply: error.clone(),
                        };
                        (s, info)
                    })
                    .into_iter()
                    .collect();
                return RunEnd::Aborted {
                    error,
                    blame,
                    connection_ok: false,
                };
            }
        }
        let mut report = RunReport {
            records: records.len(),
            users: ctx.users.len(),
            shared: ctx.shared.len(),
            mailboxes: self.progress.mailboxes,
            messages: self.progress.messages,
            bytes: self.progress.bytes,
            deferred: ctx.deferred.len(),
            held: held.len(),
            ..RunReport::default()
        };
        if !ctx.candidates.is_empty() {
            if !rolling {
                report.failed = ctx.candidates.iter().map(|(s, _)| s.clone()).collect();
            } else if ctx.candidates.len() >= 2 && ctx.successes == 0 {
                // Perhaps the replica, not the users: try again later; only when this
                // keeps happening do the strikes quarantine them.
                let who: Vec<String> = ctx.candidates.iter().map(|(s, _)| s.to_string()).collect();
                return RunEnd::Aborted {
                    error: format!(
                        "the replica refused everything in this run ({}); not quarantining yet",
                        who.join(", ")
                    ),
                    blame: std::mem::take(&mut ctx.candidates),
                    connection_ok: true,
                };
            } else {
                for (subject, info) in &ctx.candidates {
                    let records: Vec<SyncLogRecord> = ctx
                        .records
                        .iter()
                        .filter(|r| subjects_of(r, &prefix).contains(subject))
                        .cloned()
                        .collect();
                    let entry = QuarantineEntry::new(
                        subject.clone(),
                        &info.mailbox,
                        &info.command,
                        &info.reply,
                    );
                    if let Err(e) = self.quarantine.add(entry, &records) {
                        return abort(format!("quarantining {subject}: {e}"));
                    }
                    error!(
                        user = subject.user().unwrap_or_default(),
                        mailbox = %info.mailbox,
                        command = %info.command,
                        reply = %info.reply,
                        "SYNCERROR: {subject} quarantined after {} tries; its {} records are kept in {}; \
                         release with `sync_client --release {}`",
                        self.opts.attempts.max(1),
                        records.len(),
                        self.quarantine.held_path().display(),
                        release_name(subject)
                    );
                    report.quarantined.push(subject.clone());
                }
            }
        }
        if !ctx.deferred.is_empty() {
            if let Err(e) = self
                .log
                .append_to_channel(&self.opts.channel, &ctx.deferred)
            {
                return abort(format!("re-logging deferred work: {e}"));
            }
            info!("{} deferred records re-logged", ctx.deferred.len());
        }
        RunEnd::Complete(report)
    }

    /// §4.9 step 3, in order, with csync's promotion and retry rules.
    fn execute(&mut self, plan: &Plan, ctx: &mut RunCtx) -> Result<(), Abort> {
        let prefix = self.opts.deleted_prefix.clone();
        let of = |name: &str| Subject::of_mailbox(name, &prefix);
        let mut users: BTreeSet<String> = plan.users.clone();
        let mut metas: BTreeSet<String> = plan.metas.clone();

        // 1. Mailbox batches, one per owner, each followed by RESTART.
        for (owner, names) in &plan.mailboxes {
            let names: Vec<String> = names.iter().cloned().collect();
            match owner {
                Some(user) => {
                    let subject = Subject::User(user.clone());
                    if ctx.quarantined.contains(&subject) {
                        continue;
                    }
                    info!(user = %user, "MAILBOXES {}", names.join(" "));
                    let mut op = |s: &mut Syncer<'_>| {
                        s.sync_mailboxes(&names)?;
                        s.conn.restart()?;
                        Ok(())
                    };
                    match self.item(ctx, &subject, &mut op)? {
                        Outcome::Done => {}
                        Outcome::Busy => ctx
                            .deferred
                            .extend(names.iter().map(|n| SyncLogRecord::mailbox(n.clone()))),
                        Outcome::Failed(e) => {
                            report(&subject, &e, names.first().map_or("", String::as_str));
                            warn!("{subject}: promoted to a USER sync");
                            users.insert(user.clone());
                        }
                    }
                }
                None => {
                    let names: Vec<String> = names
                        .into_iter()
                        .filter(|n| !ctx.quarantined.contains(&Subject::Shared(n.clone())))
                        .collect();
                    if names.is_empty() {
                        continue;
                    }
                    info!("MAILBOXES {}", names.join(" "));
                    let batch_subject = Subject::Shared(names[0].clone());
                    let mut op = |s: &mut Syncer<'_>| {
                        s.sync_mailboxes(&names)?;
                        s.conn.restart()?;
                        Ok(())
                    };
                    match self.item(ctx, &batch_subject, &mut op)? {
                        Outcome::Done => {
                            ctx.shared.extend(names.iter().cloned());
                        }
                        Outcome::Busy => ctx
                            .deferred
                            .extend(names.iter().map(|n| SyncLogRecord::mailbox(n.clone()))),
                        Outcome::Failed(e) => {
                            report(&batch_subject, &e, &names[0]);
                            // One by one, so one bad shared mailbox does not hold up
                            // the others.
                            for name in &names {
                                self.shared_mailbox(ctx, name)?;
                            }
                        }
                    }
                }
            }
        }

        // 2. Quota roots.
        for root in &plan.quotas {
            let subject = of(root);
            if ctx.quarantined.contains(&subject) {
                continue;
            }
            info!("QUOTA {root}");
            let mut op = |s: &mut Syncer<'_>| s.sync_quota(root);
            let outcome = match &subject {
                Subject::User(_) => self.item(ctx, &subject, &mut op)?,
                Subject::Shared(_) => self.item_with_retries(ctx, &subject, &mut op)?,
            };
            match outcome {
                Outcome::Done => {}
                Outcome::Busy => ctx.deferred.push(SyncLogRecord::quota(root.clone())),
                Outcome::Failed(e) => self.failed(ctx, &subject, &e, root, &mut users),
            }
        }

        // 3. Annotations ("": server annotations).
        for name in &plan.annotations {
            let subject = if name.is_empty() {
                Subject::Shared(String::new())
            } else {
                of(name)
            };
            if ctx.quarantined.contains(&subject) {
                continue;
            }
            info!("ANNOTATION {name:?}");
            let mut op = |s: &mut Syncer<'_>| s.sync_annotations(name);
            let outcome = match &subject {
                Subject::User(_) => self.item(ctx, &subject, &mut op)?,
                Subject::Shared(_) => self.item_with_retries(ctx, &subject, &mut op)?,
            };
            match outcome {
                Outcome::Done => {}
                Outcome::Busy => ctx.deferred.push(SyncLogRecord::annotation(name.clone())),
                Outcome::Failed(e) if name.is_empty() => {
                    // As Cyrus: a failure on the server annotations is reported only.
                    report(&subject, &e, "");
                }
                Outcome::Failed(e) => self.failed(ctx, &subject, &e, name, &mut users),
            }
        }

        // 4. Seen states (failure: META of the user).
        for seen in &plan.seen {
            let subject = Subject::User(seen.userid.clone());
            if ctx.quarantined.contains(&subject) {
                continue;
            }
            info!(user = %seen.userid, "SEEN {}", seen.uniqueid);
            let mut op = |s: &mut Syncer<'_>| s.sync_one_seen(&seen.userid, &seen.uniqueid);
            match self.item(ctx, &subject, &mut op)? {
                Outcome::Done => {}
                Outcome::Busy => ctx.deferred.push(SyncLogRecord::seen(
                    seen.userid.clone(),
                    seen.uniqueid.clone(),
                )),
                Outcome::Failed(e) => {
                    report(&subject, &e, &seen.uniqueid);
                    metas.insert(seen.userid.clone());
                }
            }
        }

        // 5. Subscriptions (failure: META of the user).
        for sub in &plan.subscriptions {
            let subject = Subject::User(sub.userid.clone());
            if ctx.quarantined.contains(&subject) {
                continue;
            }
            info!(user = %sub.userid, "SUB {}", sub.mailbox);
            let mut op = |s: &mut Syncer<'_>| s.sync_subscription(&sub.userid, &sub.mailbox);
            match self.item(ctx, &subject, &mut op)? {
                Outcome::Done => {}
                Outcome::Busy => ctx
                    .deferred
                    .push(SyncLogRecord::sub(sub.userid.clone(), sub.mailbox.clone())),
                Outcome::Failed(e) => {
                    report(&subject, &e, &sub.mailbox);
                    metas.insert(sub.userid.clone());
                }
            }
        }

        // 6. Mailboxes that may be gone (only with a tombstone of that exact name).
        for name in &plan.unmailboxes {
            let subject = of(name);
            if ctx.quarantined.contains(&subject) {
                continue;
            }
            info!("UNMAILBOX {name}");
            let mut op = |s: &mut Syncer<'_>| s.sync_unmailbox(name);
            let outcome = match &subject {
                Subject::User(_) => self.item(ctx, &subject, &mut op)?,
                Subject::Shared(_) => self.item_with_retries(ctx, &subject, &mut op)?,
            };
            match outcome {
                Outcome::Done => {}
                Outcome::Busy => ctx.deferred.push(SyncLogRecord::unmailbox(name.clone())),
                Outcome::Failed(e) => self.failed(ctx, &subject, &e, name, &mut users),
            }
        }

        // 7. META syncs (a USER sync covers them; failure: USER).
        for user in metas.difference(&users.clone()) {
            let subject = Subject::User(user.clone());
            if ctx.quarantined.contains(&subject) {
                continue;
            }
            info!(user = %user, "META {user}");
            let mut op = |s: &mut Syncer<'_>| s.sync_meta(user);
            match self.item(ctx, &subject, &mut op)? {
                Outcome::Done => {}
                Outcome::Busy => ctx.deferred.push(SyncLogRecord::meta(user.clone())),
                Outcome::Failed(e) => {
                    report(&subject, &e, "");
                    warn!("{subject}: promoted to a USER sync");
                    users.insert(user.clone());
                }
            }
        }

        // 8. USER syncs, each followed by RESTART; retried, then quarantined.
        for user in &users {
            let subject = Subject::User(user.clone());
            if ctx.quarantined.contains(&subject) {
                continue;
            }
            info!(user = %user, "USER {user}");
            let mut op = |s: &mut Syncer<'_>| {
                let result = s.sync_user(user);
                let restarted = s.conn.restart();
                result?;
                restarted?;
                Ok(())
            };
            match self.item_with_retries(ctx, &subject, &mut op)? {
                Outcome::Done => {}
                Outcome::Busy => ctx.deferred.push(SyncLogRecord::user(user.clone())),
                Outcome::Failed(e) => {
                    report(&subject, &e, "");
                    let inbox = self.store.namespace().inbox(user);
                    ctx.candidates.push((subject, FailureInfo::of(&e, &inbox)));
                }
            }
        }

        // 9. Users that may be gone (only when the INBOX is gone here).
        for user in &plan.unusers {
            let subject = Subject::User(user.clone());
            if ctx.quarantined.contains(&subject) {
                continue;
            }
            info!(user = %user, "UNUSER {user}");
            let mut op = |s: &mut Syncer<'_>| s.sync_unuser(user);
            match self.item_with_retries(ctx, &subject, &mut op)? {
                Outcome::Done => {}
                Outcome::Busy => ctx.deferred.push(SyncLogRecord::unuser(user.clone())),
                Outcome::Failed(e) => {
                    report(&subject, &e, "");
                    let inbox = self.store.namespace().inbox(user);
                    ctx.candidates.push((subject, FailureInfo::of(&e, &inbox)));
                }
            }
        }
        Ok(())
    }

    /// One shared mailbox on its own, with retries.
    fn shared_mailbox(&mut self, ctx: &mut RunCtx, name: &str) -> Result<(), Abort> {
        let subject = Subject::Shared(name.to_owned());
        let names = [name.to_owned()];
        let mut op = |s: &mut Syncer<'_>| {
            s.sync_mailboxes(&names)?;
            s.conn.restart()?;
            Ok(())
        };
        match self.item_with_retries(ctx, &subject, &mut op)? {
            Outcome::Done => {}
            Outcome::Busy => ctx.deferred.push(SyncLogRecord::mailbox(name.to_owned())),
            Outcome::Failed(e) => {
                report(&subject, &e, name);
                ctx.candidates.push((subject, FailureInfo::of(&e, name)));
            }
        }
        Ok(())
    }

    /// A failed quota, annotation or unmailbox item: a user's is promoted to a USER
    /// sync; a shared one (already retried) becomes a quarantine candidate.
    fn failed(
        &self,
        ctx: &mut RunCtx,
        subject: &Subject,
        e: &SyncError,
        name: &str,
        users: &mut BTreeSet<String>,
    ) {
        report(subject, e, name);
        match subject {
            Subject::User(user) => {
                warn!("{subject}: promoted to a USER sync");
                users.insert(user.clone());
            }
            Subject::Shared(_) => ctx
                .candidates
                .push((subject.clone(), FailureInfo::of(e, name))),
        }
    }
}

/// Logs a failed item with its user, mailbox, command and the replica's reply.
fn report(subject: &Subject, e: &SyncError, mailbox: &str) {
    let info = FailureInfo::of(e, mailbox);
    error!(
        user = subject.user().unwrap_or_default(),
        mailbox = %info.mailbox,
        command = %info.command,
        reply = %info.reply,
        "SYNCERROR: {subject}: {e}"
    );
}

fn release_name(subject: &Subject) -> &str {
    match subject {
        Subject::User(u) | Subject::Shared(u) => u,
    }
}

fn log_report(path: &Path, report: &RunReport) {
    info!(
        records = report.records,
        users = report.users,
        shared = report.shared,
        mailboxes = report.mailboxes,
        messages = report.messages,
        bytes = report.bytes,
        deferred = report.deferred,
        held = report.held,
        quarantined = report.quarantined.len(),
        ms = report.elapsed.as_millis() as u64,
        "processed {}",
        path.display()
    );
}

/// Which filesystem events on the log file mean "records were written".
fn wakes(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    matches!(
        kind,
        EventKind::Any
            | EventKind::Other
            | EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Data(_))
            | EventKind::Modify(ModifyKind::Any)
            | EventKind::Modify(ModifyKind::Other)
            | EventKind::Modify(ModifyKind::Name(RenameMode::To))
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// `--release`: releases the named users (or shared mailboxes) of a channel's
/// quarantine; returns what was released.
pub fn release(
    config_dir: &Path,
    channel: &Channel,
    deleted_prefix: &str,
    names: &[String],
) -> Result<Vec<Subject>, RollingError> {
    let log_path = csync_synclog::channel_log_path(config_dir, channel);
    let dir = log_path.parent().unwrap_or(config_dir);
    let quarantine = Quarantine::new(dir, deleted_prefix);
    let log = SyncLog::new(config_dir, vec![channel.clone()]);
    Ok(quarantine.release(names, &log, channel)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_events() {
        use notify::EventKind;
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode,
        };
        assert!(wakes(&EventKind::Create(CreateKind::File)));
        assert!(wakes(&EventKind::Modify(ModifyKind::Data(DataChange::Any))));
        assert!(wakes(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!wakes(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!wakes(&EventKind::Remove(RemoveKind::File)));
        assert!(!wakes(&EventKind::Modify(ModifyKind::Name(
            RenameMode::From
        ))));
    }
}
