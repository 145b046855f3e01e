//! The README's first command, end to end: `quickstart.sh` builds, starts a replica
//! and a rolling master, delivers sample mail, and the replica converges (checked with
//! `sync_client --verify`, which compares every mailbox, record CRC and metadata).

use std::path::Path;
use std::process::Command;

#[test]
fn quickstart_runs_a_replicating_pair() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let script = root.join("quickstart.sh");
    let run = Command::new("bash")
        .arg(&script)
        .arg(&demo)
        .env("CSYNC_PROFILE", "debug")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stop = || {
        let _ = Command::new("bash")
            .arg(&script)
            .arg("stop")
            .arg(&demo)
            .output();
    };
    if !run.status.success() {
        stop();
        panic!(
            "quickstart failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    assert!(stdout.contains("caught up in"), "{stdout}");
    assert!(stdout.contains("visible on the replica"), "{stdout}");
    let bin = Path::new(env!("CARGO_BIN_EXE_sync_client"));
    let verify = Command::new(bin)
        .arg("-C")
        .arg(demo.join("master/imapd.conf"))
        .args(["--verify", "-A"])
        .output()
        .unwrap();
    stop();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "the replica did not converge:\n{report}\n{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(report.contains("OK alice user.alice"), "{report}");
    assert!(!report.contains("DIFF"), "{report}");
}
