//! Against the real saslauthd from Debian's sasl2-bin, `-a sasldb`.
//!
//! saslauthd's sasldb module has no option for the database path: it always opens the
//! compiled-in `/etc/sasldb2`. So the test runs the daemon inside a private mount
//! namespace (`unshare --mount`) where a temporary sasldb is bind-mounted over
//! `/etc/sasldb2`; the machine's own file is never touched. That needs root (or
//! CAP_SYS_ADMIN), `unshare`, sasl2-bin and an existing `/etc/sasldb2` to mount over.
//! Where any of that is missing the test fails and says what to install (`.ci/run`
//! installs sasl2-bin, which creates `/etc/sasldb2`): a test that cannot run does not
//! pass.
//!
//! With an empty realm (what Cyrus's sync_server sends for a bare login) saslauthd's
//! sasldb module looks the user up in the realm named by `gethostname()`, so the bare
//! user is created in that realm; a second user lives in realm `example.test` and is
//! reached as `user@example.test`, which the client splits like Cyrus.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csync_auth::{
    AuthFailure, AuthSettings, Authenticator, ClientExchange, ClientStep, PasswordCheck, Saslauthd,
    SaslauthdVerdict, Step,
};

const SASLAUTHD: &str = "/usr/sbin/saslauthd";
const SASLPASSWD2: &str = "/usr/sbin/saslpasswd2";
const SYSTEM_SASLDB: &str = "/etc/sasldb2";

/// Kills the daemon (by its own pid) however the test ends.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skip(reason: &str) {
    panic!(
        "the real saslauthd test cannot run: {reason} \
         (it needs root, unshare and `apt-get install sasl2-bin`)"
    );
}

fn add_user(db: &Path, realm: &str, user: &str, password: &str) -> Result<(), String> {
    let mut child = Command::new(SASLPASSWD2)
        .args(["-p", "-c", "-f"])
        .arg(db)
        .args(["-u", realm, user])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("saslpasswd2: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(password.as_bytes())
            .map_err(|e| format!("saslpasswd2 stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("saslpasswd2: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "saslpasswd2 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn start_daemon(dir: &Path, db: &Path) -> Result<Daemon, String> {
    let run = dir.join("run");
    fs::create_dir(&run).map_err(|e| e.to_string())?;
    let log = dir.join("saslauthd.log");
    let log_file = fs::File::create(&log).map_err(|e| e.to_string())?;
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount --bind \"$1\" /etc/sasldb2 || exit 97; \
             exec \"$2\" -d -a sasldb -n 0 -m \"$3\"",
        )
        .arg("sh")
        .arg(db)
        .arg(SASLAUTHD)
        .arg(&run)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("unshare: {e}"))?;
    let mut daemon = Daemon { child, log };
    let mux = run.join("mux");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::os::unix::net::UnixStream::connect(&mux).is_ok() {
            return Ok(daemon);
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            let log = fs::read_to_string(&daemon.log).unwrap_or_default();
            return Err(format!(
                "the namespace or daemon could not start ({status}): {log}"
            ));
        }
        if Instant::now() > deadline {
            let log = fs::read_to_string(&daemon.log).unwrap_or_default();
            return Err(format!("saslauthd did not listen within 10 s: {log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn real_saslauthd_with_sasldb() {
    for (path, what) in [
        (SASLAUTHD, "saslauthd (sasl2-bin) is not installed"),
        (SASLPASSWD2, "saslpasswd2 (sasl2-bin) is not installed"),
        (SYSTEM_SASLDB, "there is no /etc/sasldb2 to bind-mount over"),
    ] {
        if !Path::new(path).exists() {
            return skip(what);
        }
    }
    let hostname = match fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(h) if !h.trim().is_empty() => h.trim().to_owned(),
        _ => return skip("no host name to use as saslauthd's default realm"),
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sasldb2");
    if let Err(e) = add_user(&db, &hostname, "repluser", "secret")
        .and_then(|()| add_user(&db, "example.test", "realmuser", "realmpw"))
    {
        return skip(&e);
    }
    let daemon = match start_daemon(dir.path(), &db) {
        Ok(d) => d,
        Err(e) => return skip(&e),
    };
    let client = Saslauthd::new(dir.path().join("run/mux"));

    // The client on its own.
    assert_eq!(
        client.verify("repluser", b"secret").unwrap(),
        SaslauthdVerdict::Ok
    );
    assert!(matches!(
        client.verify("repluser", b"wrong").unwrap(),
        SaslauthdVerdict::No(_)
    ));
    assert!(matches!(
        client.verify("nobody", b"secret").unwrap(),
        SaslauthdVerdict::No(_)
    ));
    assert_eq!(
        client.verify("realmuser@example.test", b"realmpw").unwrap(),
        SaslauthdVerdict::Ok
    );
    assert!(matches!(
        client.verify("realmuser", b"realmpw").unwrap(),
        SaslauthdVerdict::No(_)
    ));
    assert_eq!(
        client.check("repluser", b"secret", &hostname).unwrap(),
        SaslauthdVerdict::Ok
    );

    // Behind the server, PLAIN and LOGIN from the client side.
    let mut settings = AuthSettings::new("replica.test");
    settings.allow_plaintext = true;
    settings.admins = vec!["repluser".into()];
    settings.password_checks = vec![PasswordCheck::Saslauthd(client)];
    let auth = Authenticator::new(settings).unwrap();
    assert_eq!(auth.mechanisms(false), ["PLAIN", "LOGIN"]);
    for mech in ["PLAIN", "LOGIN"] {
        for (password, expected) in [
            (
                "secret",
                Step::Success {
                    authcid: "repluser".into(),
                    authzid: None,
                },
            ),
            ("wrong", Step::Failure(AuthFailure::AuthenticationFailure)),
        ] {
            let mut c =
                ClientExchange::new(&[mech.to_owned()], false, true, "repluser", password, None)
                    .unwrap();
            let (mut ex, mut step) = auth.start(mech, c.initial_response(), false).unwrap();
            while let Step::Challenge(challenge) = &step {
                let reply = c.step(challenge).unwrap();
                assert!(matches!(reply, ClientStep::Response(_)));
                step = ex.step(reply.response());
            }
            assert_eq!(step, expected, "{mech} {password}");
        }
    }
    drop(daemon);
}
