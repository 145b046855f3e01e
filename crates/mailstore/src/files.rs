//! Message files: where they live, how they are written (tmp → rename, fsync before the
//! index commits), hard links for the same GUID, and SHA-1 GUIDs computed while
//! streaming so no message is ever held whole in memory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use csync_protocol::Guid;
use sha1::{Digest, Sha1};

use crate::{Result, StoreError};

/// `<partition>/uuid/<u0>/<u1>/<uniqueid>` (Cyrus 3.6's layout). The uniqueid is
/// validated to be `[A-Za-z0-9_-]`, so this cannot leave the partition.
pub fn mailbox_dir(partition_root: &Path, uniqueid: &str) -> PathBuf {
    let mut chars = uniqueid.chars();
    let u0 = chars.next().unwrap_or('_');
    let u1 = chars.next().unwrap_or('_');
    partition_root
        .join("uuid")
        .join(u0.to_string())
        .join(u1.to_string())
        .join(uniqueid)
}

/// `<dir>/<uid>.`
pub fn message_path(dir: &Path, uid: u32) -> PathBuf {
    dir.join(format!("{uid}."))
}

/// The SHA-1 GUID and size of a file, read in chunks.
pub fn hash_file(path: &Path) -> Result<(Guid, u64)> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    hash_reader(file).map_err(|e| StoreError::io(path, e))
}

pub fn hash_reader(mut reader: impl Read) -> io::Result<(Guid, u64)> {
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Guid(hasher.finalize().into()), size))
}

/// Copies `reader` into a new file at `path` (through `path` + `.tmp`), returning the
/// GUID and size. The caller fsyncs before committing (see [`sync_files`]).
pub fn write_message(path: &Path, mut reader: impl Read) -> Result<(Guid, u64)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let tmp = tmp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StoreError::io(&tmp, e))?;
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    let result: io::Result<()> = (|| {
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])?;
            size += n as u64;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::io(&tmp, e));
    }
    drop(file);
    fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    Ok((Guid(hasher.finalize().into()), size))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push("tmp");
    path.with_file_name(name)
}

/// Puts `source` at `path`: a hard link when both are on one filesystem (the same GUID
/// in several mailboxes of a partition shares its bytes), a copy otherwise. Any old
/// file at `path` (left by an interrupted transaction) is replaced.
pub fn link_or_copy(source: &Path, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // The common case in one system call: a link into an existing directory. The
    // directory and a stale file are only dealt with when the link fails for them.
    let retry = match fs::hard_link(source, path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
            true
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(path, e)),
            }
            true
        }
        Err(_) => false,
    };
    if retry && fs::hard_link(source, path).is_ok() {
        return Ok(());
    }
    // Another filesystem (or no links): a copy, renamed over any old file.
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let tmp = tmp_path(path);
    fs::copy(source, &tmp).map_err(|e| StoreError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
}

/// fsyncs files (in parallel: fsync waits on the device, not the CPU) and then the
/// directories that name them.
pub fn sync_files(files: &[PathBuf], dirs: &[PathBuf]) -> Result<()> {
    fn sync_one(path: &Path) -> Result<()> {
        let f = File::open(path).map_err(|e| StoreError::io(path, e))?;
        f.sync_all().map_err(|e| StoreError::io(path, e))
    }
    const THREADS: usize = 8;
    if files.len() <= 4 {
        for f in files {
            sync_one(f)?;
        }
    } else {
        let chunk = files.len().div_ceil(THREADS);
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().try_for_each(|f| sync_one(f))))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StoreError::Invalid("fsync thread panicked".into()))
                    })
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
    }
    for d in dirs {
        sync_dir(d)?;
    }
    Ok(())
}

/// fsync of a directory, so a rename or link in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| StoreError::io(dir, e))?;
    f.sync_all().map_err(|e| StoreError::io(dir, e))
}

/// Creates a directory and its parents, fsyncing each new level's parent so the
/// directory entry itself is durable.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(StoreError::io(dir, e)),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_cyrus() {
        assert_eq!(
            mailbox_dir(Path::new("/p"), "c200jgj6thb3ssu8ep4jb0il"),
            PathBuf::from("/p/uuid/c/2/c200jgj6thb3ssu8ep4jb0il")
        );
        assert_eq!(message_path(Path::new("/d"), 7), PathBuf::from("/d/7."));
    }

    #[test]
    fn write_hash_link() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("x/1.");
        let (guid, size) = write_message(&a, &b"Hello John.\r\n"[..]).unwrap();
        assert_eq!(size, 13);
        assert_eq!(hash_file(&a).unwrap(), (guid, 13));
        let b = dir.path().join("y/2.");
        fs::write(&b, b"stale").unwrap_or(());
        link_or_copy(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"Hello John.\r\n");
        sync_files(&[a.clone(), b.clone()], &[dir.path().join("x")]).unwrap();
        // A missing directory is created; a stale file is replaced.
        let c = dir.path().join("z/w/3.");
        link_or_copy(&a, &c).unwrap();
        fs::write(dir.path().join("z/w/4."), b"stale").unwrap();
        link_or_copy(&a, &dir.path().join("z/w/4.")).unwrap();
        assert_eq!(
            fs::read(dir.path().join("z/w/4.")).unwrap(),
            b"Hello John.\r\n"
        );
        assert!(link_or_copy(&dir.path().join("nothing"), &c).is_err());
    }
}
