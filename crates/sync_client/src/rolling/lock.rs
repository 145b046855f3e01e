//! The per-user sync lock (spec §4.1): one sync_client at a time works on a user for
//! a given replica.
//!
//! Cyrus takes a mailbox-name lock `*S*<host>*<userid>`; csync takes an exclusive
//! `flock` on `<configdirectory>/lock/sync_client/<host>:<port>/<userid>` (shared
//! mailboxes share one lock, `%shared`). Everything else in csync is serialised by the
//! store's SQLite transactions, so this lock only keeps two sync_client processes (a
//! rolling one and a manual `-u`, or two rolling clients started on the same channel
//! by mistake) from pushing the same user to the same replica at once. With `-N` a
//! busy user is skipped and its work re-logged instead of waited for.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tracing::{info, warn};

use super::quarantine::Subject;

/// The lock directory of one replica.
#[derive(Clone, Debug)]
pub struct UserLocks {
    dir: PathBuf,
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct UserLock(Option<Flock<File>>);

impl Drop for UserLock {
    fn drop(&mut self) {
        if let Some(lock) = self.0.take()
            && let Err((lock, errno)) = lock.unlock()
        {
            // Closing the descriptor releases the lock anyway; never panic here.
            warn!("releasing a user lock: {errno}");
            std::mem::forget(lock);
        }
    }
}

/// A file name for a userid: bytes outside `[A-Za-z0-9._@+-]` (and a leading dot) as
/// `%XX`.
fn file_name(subject: &Subject) -> String {
    let Subject::User(user) = subject else {
        return "%shared".to_owned();
    };
    let mut out = String::with_capacity(user.len());
    for (i, b) in user.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b"_@+-".contains(&b) || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

impl UserLocks {
    /// Locks for the replica `host`:`port` under `config_dir`.
    pub fn new(config_dir: &Path, host: &str, port: u16) -> UserLocks {
        let host: String = host
            .chars()
            .map(|c| if c == '/' { '_' } else { c })
            .collect();
        UserLocks {
            dir: config_dir
                .join("lock")
                .join("sync_client")
                .join(format!("{host}:{port}")),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits for the lock of `subject` (manual runs). `None` when it cannot be taken
    /// at all (the directory is not writable...): reported, and the run goes on
    /// without it.
    pub fn wait(&self, subject: &Subject) -> Option<UserLock> {
        let mut told = false;
        loop {
            match self.try_lock(subject) {
                Ok(Some(lock)) => return Some(lock),
                Ok(None) => {
                    if !told {
                        info!("{subject}: waiting for another sync_client to finish with it");
                        told = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => {
                    warn!(
                        "cannot take the sync lock of {subject} in {}: {e}; going on without it",
                        self.dir.display()
                    );
                    return None;
                }
            }
        }
    }

    /// Tries to take the lock of `subject` without waiting: `None` if another
    /// process holds it.
    pub fn try_lock(&self, subject: &Subject) -> io::Result<Option<UserLock>> {
        let path = self.dir.join(file_name(subject));
        let open = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        };
        let file = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir)?;
                open()?
            }
            Err(e) => return Err(e),
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(UserLock(Some(lock)))),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(io::Error::from(errno)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(file_name(&Subject::User("john".into())), "john");
        assert_eq!(
            file_name(&Subject::User("john.doe@example.com".into())),
            "john.doe@example.com"
        );
        assert_eq!(file_name(&Subject::User("../x".into())), "%2E.%2Fx");
        assert_eq!(file_name(&Subject::User("a b".into())), "a%20b");
        assert_eq!(file_name(&Subject::Shared("shared.x".into())), "%shared");
        assert_eq!(file_name(&Subject::User(String::new())), "%00");
    }

    #[test]
    fn exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let locks = UserLocks::new(dir.path(), "replica", 2005);
        let john = Subject::User("john".into());
        let held = locks.try_lock(&john).unwrap().expect("free");
        assert!(locks.try_lock(&john).unwrap().is_none(), "busy");
        assert!(
            locks
                .try_lock(&Subject::User("bob".into()))
                .unwrap()
                .is_some()
        );
        drop(held);
        assert!(locks.try_lock(&john).unwrap().is_some());
        assert!(
            dir.path()
                .join("lock/sync_client/replica:2005/john")
                .exists()
        );
    }
}
