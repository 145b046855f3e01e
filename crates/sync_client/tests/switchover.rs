//! The switchover and failover procedures of docs/admin-guide.md §9–§10, run by
//! `tests/switchover.sh` on a local pair: roles swap with nothing lost, and after a
//! failover with unreplicated changes on both sides every message survives.

use std::path::Path;
use std::process::Command;

#[test]
fn switchover_and_failover_lose_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // The script also needs sync_server and csyncadm, which belong to other packages.
    let build = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bins"])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(build.success(), "cargo build --bins failed");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_sync_client"))
        .parent()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(root.join("tests/switchover.sh"))
        .arg(dir.path())
        .env("CSYNC_BIN", bin_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("PASS"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
