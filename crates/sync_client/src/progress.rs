//! Progress of a long manual run on a terminal: users, mailboxes, messages, bytes and
//! rate on one updating line (stderr), only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Counters of a run, shown on a terminal as they change.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
    pub users: u64,
    pub mailboxes: u64,
    pub messages: u64,
    pub bytes: u64,
    pub reserved: u64,
    pub total_users: Option<u64>,
}

impl Progress {
    pub fn new(show: bool) -> Progress {
        Progress {
            started: Instant::now(),
            last_draw: None,
            enabled: show && std::io::stderr().is_terminal(),
            users: 0,
            mailboxes: 0,
            messages: 0,
            bytes: 0,
            reserved: 0,
            total_users: None,
        }
    }

    pub fn user_done(&mut self) {
        self.users += 1;
        self.draw(false);
    }

    pub fn mailbox_done(&mut self) {
        self.mailboxes += 1;
        self.draw(false);
    }

    pub fn uploaded(&mut self, messages: u64, bytes: u64) {
        self.messages += messages;
        self.bytes += bytes;
        self.draw(false);
    }

    pub fn reserved(&mut self, messages: u64) {
        self.reserved += messages;
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// One line: `users 12/50  mailboxes 130  messages 5120 (190.2 MB)  38.1 MB/s`.
    pub fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let users = match self.total_users {
            Some(t) => format!("{}/{t}", self.users),
            None => self.users.to_string(),
        };
        format!(
            "users {users}  mailboxes {}  messages {} ({:.1} MB, {} already there)  {:.1} MB/s  {:.0} msg/s",
            self.mailboxes,
            self.messages,
            self.bytes as f64 / 1e6,
            self.reserved,
            self.bytes as f64 / 1e6 / secs,
            self.messages as f64 / secs
        )
    }

    fn draw(&mut self, force: bool) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if !force
            && self
                .last_draw
                .is_some_and(|t| now - t < Duration::from_millis(250))
        {
            return;
        }
        self.last_draw = Some(now);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{}", self.line());
        let _ = err.flush();
    }

    /// Ends the progress line.
    pub fn finish(&mut self) {
        if self.enabled {
            self.draw(true);
            let _ = writeln!(std::io::stderr());
        }
    }
}
