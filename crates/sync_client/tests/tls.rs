//! The client's TLS: against a replica that offers PLAIN only under TLS, the client
//! does STARTTLS, verifies the replica's certificate (pinned with
//! `tls_client_ca_file`), authenticates inside TLS and replicates; a certificate it
//! does not trust is refused and nothing is sent.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl_cert(dir: &Path, name: &str) {
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.crt")))
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed for this test (apt-get install openssl)");
    assert!(ok.success());
}

#[test]
fn starttls_with_a_pinned_certificate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(
        Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--bins"])
            .current_dir(&root)
            .status()
            .unwrap()
            .success()
    );
    let bin = Path::new(env!("CARGO_BIN_EXE_sync_client"))
        .parent()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl_cert(d, "replica");
    openssl_cert(d, "stranger");
    let replica_conf = d.join("replica.conf");
    std::fs::write(
        &replica_conf,
        format!(
            "configdirectory: {0}/r/conf\npartition-default: {0}/r/spool\nadmins: repl\n\
             allowplaintext: no\nsasl_mech_list: PLAIN LOGIN\n\
             tls_server_cert: {0}/replica.crt\ntls_server_key: {0}/replica.key\n",
            d.display()
        ),
    )
    .unwrap();
    let adm = |conf: &Path, args: &[&str], input: &[u8]| {
        let mut c = Command::new(bin.join("csyncadm"))
            .arg("-C")
            .arg(conf)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input).unwrap();
        assert!(c.wait().unwrap().success(), "csyncadm {args:?}");
    };
    adm(&replica_conf, &["passwd", "-p", "repl"], b"tls-secret\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Kill(
        Command::new(bin.join("sync_server"))
            .arg("-C")
            .arg(&replica_conf)
            .args(["--listen", &format!("127.0.0.1:{port}"), "-v"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let master_conf = |ca: &str| {
        let path = d.join(format!("master-{ca}.conf"));
        std::fs::write(
            &path,
            format!(
                "configdirectory: {0}/m/conf\npartition-default: {0}/m/spool\n\
                 sync_host: localhost:{port}\nsync_authname: repl\nsync_password: tls-secret\n\
                 tls_client_ca_file: {0}/{ca}.crt\n",
                d.display()
            ),
        )
        .unwrap();
        path
    };
    let good = master_conf("replica");
    adm(&good, &["create", "user.tim"], b"");
    adm(
        &good,
        &["deliver", "user.tim"],
        b"Subject: over TLS\r\n\r\nhi\r\n",
    );
    let run = |conf: &Path| {
        Command::new(bin.join("sync_client"))
            .arg("-C")
            .arg(conf)
            .args(["-v", "-u", "tim"])
            .output()
            .unwrap()
    };
    // A certificate the client does not trust: refused before anything is sent.
    let refused = run(&master_conf("stranger"));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("TLS"), "{err}");
    // The pinned one: STARTTLS, PLAIN inside TLS, replicated.
    let ok = run(&good);
    let err = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{err}");
    assert!(err.contains("tls=true"), "{err}");
    let show = Command::new(bin.join("csyncadm"))
        .arg("-C")
        .arg(&replica_conf)
        .args(["show", "user.tim"])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("last_uid:        1"), "{show}");
}
