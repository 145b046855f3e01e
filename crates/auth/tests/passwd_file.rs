//! The password file on disk: round trip, atomic save, permissions, locked updates.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use csync_auth::{PasswordCheckResult, PasswordFile, PasswordFileError, ScramHash};

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn save_and_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csync.passwd");
    let mut file = PasswordFile::new(&path);
    file.set("repluser", "secret").unwrap();
    file.set("user@replica.test", "other secret").unwrap();
    file.save().unwrap();
    assert_eq!(mode(&path), 0o600);

    let loaded = PasswordFile::load(&path).unwrap();
    assert_eq!(loaded, file);
    assert_eq!(
        loaded.users().collect::<Vec<_>>(),
        ["repluser", "user@replica.test"]
    );
    assert_eq!(
        loaded.check_password("repluser", b"secret"),
        PasswordCheckResult::Ok
    );
    assert_eq!(
        loaded.check_password("user@replica.test", b"other secret"),
        PasswordCheckResult::Ok
    );
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# csync password file"));
    let entry = text.lines().find(|l| l.starts_with("repluser:")).unwrap();
    let fields: Vec<&str> = entry["repluser:".len()..].split(' ').collect();
    assert_eq!(fields.len(), 2);
    assert!(fields[0].starts_with("SCRAM-SHA-256$4096:"));
    assert!(fields[1].starts_with("SCRAM-SHA-1$4096:"));
    assert!(!text.contains("secret"));

    // remove, save, load
    let mut again = loaded;
    assert!(again.remove("repluser"));
    assert!(!again.remove("repluser"));
    again.save().unwrap();
    let loaded = PasswordFile::load(&path).unwrap();
    assert!(!loaded.contains("repluser"));
    assert_eq!(loaded.len(), 1);
}

#[test]
fn save_is_atomic_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csync.passwd");
    let mut file = PasswordFile::new(&path);
    file.set("old", "pw1").unwrap();
    file.save().unwrap();
    let before = fs::read(&path).unwrap();
    let inode_before = fs::metadata(&path).unwrap().ino();

    // A reader that opened the old file keeps reading the old, complete contents.
    let mut reader = fs::File::open(&path).unwrap();
    file.set("new", "pw2").unwrap();
    file.save().unwrap();
    let mut old_view = Vec::new();
    reader.read_to_end(&mut old_view).unwrap();
    assert_eq!(old_view, before);

    // The name now points at a new inode with the new contents, mode 0600.
    assert_ne!(fs::metadata(&path).unwrap().ino(), inode_before);
    assert!(PasswordFile::load(&path).unwrap().contains("new"));
    assert_eq!(mode(&path), 0o600);

    // Nothing but the file is left in the directory.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["csync.passwd"]);

    // Saving over a file with loose permissions leaves a 0600 file.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    file.save().unwrap();
    assert_eq!(mode(&path), 0o600);

    // A save that cannot happen leaves nothing behind and reports the path.
    let missing = PasswordFile::new(dir.path().join("no/such/dir/passwd"));
    assert!(matches!(missing.save(), Err(PasswordFileError::Io { .. })));
}

#[test]
fn loose_permissions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csync.passwd");
    let mut file = PasswordFile::new(&path);
    file.set("repl", "secret").unwrap();
    file.save().unwrap();
    for loose in [0o640, 0o604, 0o644, 0o660, 0o610] {
        fs::set_permissions(&path, fs::Permissions::from_mode(loose)).unwrap();
        match PasswordFile::load(&path) {
            Err(PasswordFileError::InsecurePermissions { mode, .. }) => assert_eq!(mode, loose),
            other => panic!("{loose:o}: {other:?}"),
        }
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    assert!(PasswordFile::load(&path).is_ok());
    let message = {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        PasswordFile::load(&path).unwrap_err().to_string()
    };
    assert!(message.contains("chmod 600"), "{message}");

    // Not a regular file.
    assert!(matches!(
        PasswordFile::load(dir.path()),
        Err(PasswordFileError::NotAFile { .. })
    ));
    // Missing: an error for load, an empty file for load_or_new.
    let absent = dir.path().join("absent");
    assert!(matches!(
        PasswordFile::load(&absent),
        Err(PasswordFileError::Io { .. })
    ));
    assert!(PasswordFile::load_or_new(&absent).unwrap().is_empty());
}

#[test]
fn locked_updates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csync.passwd");
    // Eight concurrent updaters, each adding its own user: none is lost.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                PasswordFile::update(&path, |f| f.set(&format!("user{i}"), "pw")).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let file = PasswordFile::load(&path).unwrap();
    assert_eq!(file.len(), 8);
    assert_eq!(mode(&dir.path().join("csync.passwd.lock")), 0o600);

    // A failing change saves nothing.
    let err = PasswordFile::update(&path, |f| f.set("bad user", "pw")).unwrap_err();
    assert!(matches!(err, PasswordFileError::InvalidUserid(..)));
    assert_eq!(PasswordFile::load(&path).unwrap().len(), 8);

    // Iterations apply to new entries.
    PasswordFile::update(&path, |f| {
        f.set_iterations(10000)?;
        f.set("slow", "pw")
    })
    .unwrap();
    let file = PasswordFile::load(&path).unwrap();
    let slow = file.get("slow").unwrap();
    assert_eq!(slow.get(ScramHash::Sha256).unwrap().iterations(), 10000);
    assert_eq!(
        file.get("user0")
            .unwrap()
            .get(ScramHash::Sha1)
            .unwrap()
            .iterations(),
        4096
    );
}
