//! Opening an upload's message files ahead of the connection.
//!
//! A full sync reads message files the master has not touched for a long time, so
//! most reads go to the disk, and reading them one after the other leaves the
//! connection waiting for each (a second of a 5,000-message run here). A thread
//! opens the files of one `APPLY MESSAGE` in order, asks the
//! kernel to read each one in whole (`posix_fadvise(POSIX_FADV_WILLNEED)`, which
//! queues the reads and returns), and hands the open files over: the disk then works
//! on several files at once while the connection sends earlier ones.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};

/// Files opened ahead of the one being sent: this many descriptors, and at most this
/// many messages' bytes in the page cache before they are needed.
pub const AHEAD: usize = 32;

/// One opened file and its size, or why it could not be opened.
pub type Opened = io::Result<(File, u64)>;

/// Opens `path` and starts reading all of it into the page cache.
pub fn open_and_read_ahead(path: &Path) -> Opened {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    // A hint: if it fails, the later read just waits for the disk.
    let _ = posix_fadvise(
        &file,
        0,
        i64::try_from(size).unwrap_or(i64::MAX),
        PosixFadviseAdvice::POSIX_FADV_WILLNEED,
    );
    Ok((file, size))
}

/// Runs `send` with the files of `paths` handed out in order, each call of its
/// argument giving the next one. With more than one file, a scoped thread opens them
/// up to [`AHEAD`] in advance; it stops at its next file once `send` returns. A
/// single file is opened right there, without a thread.
pub fn with_files_ahead<T>(
    paths: &[&Path],
    send: impl FnOnce(&mut dyn FnMut() -> Opened) -> T,
) -> T {
    if paths.len() <= 1 {
        let mut paths = paths.iter();
        return send(&mut || match paths.next() {
            Some(path) => open_and_read_ahead(path),
            None => Err(io::Error::other("no file left to open")),
        });
    }
    thread::scope(|scope| {
        let (opened_tx, opened) = mpsc::sync_channel(AHEAD);
        scope.spawn(move || {
            for path in paths {
                if opened_tx.send(open_and_read_ahead(path)).is_err() {
                    // The upload was abandoned.
                    return;
                }
            }
        });
        let result = send(&mut || {
            opened.recv().unwrap_or_else(|_| {
                Err(io::Error::other(
                    "the file-opening thread stopped before the last file",
                ))
            })
        });
        // Ends the thread if `send` stopped early: its next send fails.
        drop(opened);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::path::PathBuf;

    fn refs(paths: &[PathBuf]) -> Vec<&Path> {
        paths.iter().map(PathBuf::as_path).collect()
    }

    fn files(dir: &std::path::Path, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let path = dir.join(format!("{i}."));
                std::fs::write(&path, format!("message {i}\r\n").repeat(i + 1)).unwrap();
                path
            })
            .collect()
    }

    #[test]
    fn files_come_out_in_order_with_their_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = files(dir.path(), 3 * AHEAD);
        let got = with_files_ahead(&refs(&paths), |next| {
            (0..paths.len())
                .map(|_| {
                    let (mut file, size) = next().unwrap();
                    let mut body = String::new();
                    file.read_to_string(&mut body).unwrap();
                    assert_eq!(body.len() as u64, size);
                    body
                })
                .collect::<Vec<_>>()
        });
        for (i, body) in got.iter().enumerate() {
            assert_eq!(*body, format!("message {i}\r\n").repeat(i + 1));
        }
    }

    #[test]
    fn a_missing_file_is_an_error_in_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = files(dir.path(), 3);
        paths.insert(1, dir.path().join("gone."));
        let results = with_files_ahead(&refs(&paths), |next| {
            (0..4)
                .map(|_| next().map(|(_, size)| size))
                .collect::<Vec<_>>()
        });
        assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
        let e = results[1].as_ref().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn stopping_early_ends_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let paths = files(dir.path(), 4 * AHEAD);
        // Returns (the scope joins the thread) although most files were never taken.
        let first = with_files_ahead(&refs(&paths), |next| next().map(|(_, size)| size).unwrap());
        assert_eq!(first, "message 0\r\n".len() as u64);
    }

    #[test]
    fn asking_past_the_last_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for n in [1, 2] {
            let paths = files(dir.path(), n);
            with_files_ahead(&refs(&paths), |next| {
                for _ in 0..n {
                    next().unwrap();
                }
                assert!(next().is_err());
            });
        }
    }
}
