//! Whole-file fcntl record locks, the kind Cyrus takes on sync_log files (§6.4).
//!
//! Cyrus on Linux locks with classic POSIX record locks (`fcntl(F_SETLKW)` over
//! the whole file). `flock(2)` locks would not exclude those, so they are no use
//! here. On Linux csync takes open-file-description locks (`F_OFD_SETLKW`): the
//! kernel makes them conflict with classic record locks, so Cyrus processes are
//! excluded all the same, and unlike classic locks they belong to the open file,
//! not the process, so two threads of one csync process exclude each other and
//! closing some other descriptor of the file does not drop the lock. Elsewhere the
//! classic lock is used (threads of one process then do not exclude each other).

use std::fs::File;
use std::io;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

fn whole_file(kind: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        // 0 = to the end of the file, however far it grows
        l_len: 0,
        // must be 0 for OFD locks
        l_pid: 0,
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set(lock: &libc::flock, wait: bool) -> FcntlArg<'_> {
    if wait {
        FcntlArg::F_OFD_SETLKW(lock)
    } else {
        FcntlArg::F_OFD_SETLK(lock)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set(lock: &libc::flock, wait: bool) -> FcntlArg<'_> {
    if wait {
        FcntlArg::F_SETLKW(lock)
    } else {
        FcntlArg::F_SETLK(lock)
    }
}

fn apply(file: &File, kind: libc::c_int, wait: bool) -> io::Result<()> {
    let lock = whole_file(kind);
    loop {
        match fcntl(file, set(&lock, wait)) {
            Ok(_) => return Ok(()),
            // a signal interrupted the wait: wait again, as Cyrus does
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(io::Error::from(errno)),
        }
    }
}

/// Waits for and takes an exclusive lock (the file must be open for writing).
pub(crate) fn lock_exclusive(file: &File) -> io::Result<()> {
    apply(file, libc::F_WRLCK, true)
}

/// Waits for and takes a shared lock (the file must be open for reading); it
/// waits out any writer holding the exclusive lock.
pub(crate) fn lock_shared(file: &File) -> io::Result<()> {
    apply(file, libc::F_RDLCK, true)
}

/// Releases the lock.
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    apply(file, libc::F_UNLCK, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn two_descriptors_in_one_process_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let open = || {
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .unwrap()
        };
        let holder = open();
        lock_exclusive(&holder).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = thread::spawn({
            let file = open();
            move || {
                lock_exclusive(&file).unwrap();
                tx.send(()).unwrap();
                unlock(&file).unwrap();
            }
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "second lock granted while the first is held"
        );
        // closing another descriptor of the same file must not drop the lock
        drop(open());
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        unlock(&holder).unwrap();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("lock granted after release");
        waiter.join().unwrap();
    }

    #[test]
    fn shared_lock_waits_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"").unwrap();
        let writer = OpenOptions::new().append(true).open(&path).unwrap();
        lock_exclusive(&writer).unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = File::open(&path).unwrap();
        let waiter = thread::spawn(move || {
            lock_shared(&reader).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        unlock(&writer).unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
    }
}
