//! A client for saslauthd's `mux` socket (`sasl_pwcheck_method: saslauthd`).
//!
//! This is the only socket this crate opens. The exchange is Cyrus SASL 2.1.28's
//! (`lib/checkpw.c, saslauthd_verify_password`), one request per connection:
//!
//! ```text
//! C: <u16 BE len> login <u16 BE len> password <u16 BE len> service <u16 BE len> realm
//! S: <u16 BE len> "OK..." | "NO..."
//! ```
//!
//! As in Cyrus: a login containing `@` is split at the **last** `@` into login and realm;
//! otherwise the realm is empty, because Cyrus's sync_server creates its SASL connection
//! with a NULL user realm (`sasl_server_new("csync", servername, NULL, ...)`), and
//! saslauthd then picks its own default (with `-a sasldb`, the host name). The service
//! is `csync`. Cyrus SASL 2.1.28 (Debian 12) sends no fifth "client address" field; later
//! versions do, and this client follows 2.1.28.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Cyrus SASL's compiled-in default on Debian (`PATH_SASLAUTHD_RUNDIR "/mux"` with
/// `--with-saslauthd=/var/run/saslauthd`); `/var/run` is a symlink to `/run`, so this is
/// also `/run/saslauthd/mux`, where Debian's saslauthd (`-m /var/run/saslauthd`) listens.
pub const DEFAULT_SASLAUTHD_PATH: &str = "/var/run/saslauthd/mux";
/// The SASL service name of Cyrus's sync_server.
pub const CSYNC_SERVICE: &str = "csync";
/// How long a check may take before it counts as a failure of saslauthd.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Cyrus's request buffer (`char query[8192]`, 30 bytes reserved).
const MAX_QUERY: usize = 8192;
/// Cyrus reads at most 1023 bytes of the reply.
const MAX_REPLY: usize = 1023;

/// The two answers saslauthd gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaslauthdVerdict {
    /// The reply started with `OK`.
    Ok,
    /// Anything else (`NO`, `NO <reason>`); the reason text is kept for logs.
    No(String),
}

/// saslauthd could not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum SaslauthdError {
    #[error("cannot connect to saslauthd at {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("saslauthd i/o: {0}")]
    Io(#[source] std::io::Error),
    #[error("saslauthd request too large")]
    TooLarge,
    #[error("a NUL byte cannot be passed to saslauthd")]
    Nul,
    #[error("bad response from saslauthd")]
    BadResponse,
}

/// Where and how to ask saslauthd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saslauthd {
    /// `sasl_saslauthd_path`: the mux socket.
    pub path: PathBuf,
    /// The SASL service name sent (`csync`).
    pub service: String,
    /// Read/write timeout for one check.
    pub timeout: Duration,
}

impl Default for Saslauthd {
    fn default() -> Self {
        Saslauthd::new(DEFAULT_SASLAUTHD_PATH)
    }
}

impl Saslauthd {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Saslauthd {
            path: path.into(),
            service: CSYNC_SERVICE.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Checks `login`'s password the way Cyrus does: `user@realm` is split at the last
    /// `@`, a bare login goes with an empty realm. Blocks for up to about 2×`timeout`.
    pub fn verify(&self, login: &str, password: &[u8]) -> Result<SaslauthdVerdict, SaslauthdError> {
        let (user, realm) = split_realm(login);
        self.check(user, password, realm)
    }

    /// Sends one request with exactly these fields.
    pub fn check(
        &self,
        login: &str,
        password: &[u8],
        realm: &str,
    ) -> Result<SaslauthdVerdict, SaslauthdError> {
        let request = encode_request(login, password, &self.service, realm)?;
        let mut stream =
            UnixStream::connect(&self.path).map_err(|source| SaslauthdError::Connect {
                path: self.path.clone(),
                source,
            })?;
        let timeout = Some(self.timeout.max(Duration::from_millis(1)));
        stream
            .set_read_timeout(timeout)
            .and_then(|()| stream.set_write_timeout(timeout))
            .map_err(SaslauthdError::Io)?;
        stream.write_all(&request).map_err(SaslauthdError::Io)?;
        stream.flush().map_err(SaslauthdError::Io)?;
        read_reply(&mut stream)
    }
}

/// Cyrus's split: at the last `@`, if any.
pub fn split_realm(login: &str) -> (&str, &str) {
    match login.rfind('@') {
        Some(at) => (&login[..at], &login[at + 1..]),
        None => (login, ""),
    }
}

/// The request bytes: four counted strings. Refuses NUL bytes (Cyrus passes C strings,
/// so it could not send them either) and requests larger than Cyrus's 8 KiB buffer.
pub fn encode_request(
    login: &str,
    password: &[u8],
    service: &str,
    realm: &str,
) -> Result<Vec<u8>, SaslauthdError> {
    let fields: [&[u8]; 4] = [
        login.as_bytes(),
        password,
        service.as_bytes(),
        realm.as_bytes(),
    ];
    if fields.iter().any(|f| f.contains(&0)) {
        return Err(SaslauthdError::Nul);
    }
    let total: usize = fields.iter().map(|f| f.len()).sum();
    if total + 30 > MAX_QUERY {
        return Err(SaslauthdError::TooLarge);
    }
    let mut out = Vec::with_capacity(total + 8);
    for field in fields {
        let len = u16::try_from(field.len()).map_err(|_| SaslauthdError::TooLarge)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    Ok(out)
}

/// Reads `<u16 BE len> text`; `OK` at the start means yes. Like Cyrus, a count below 2
/// is a bad response, and at most 1023 bytes of text are read.
fn read_reply(stream: &mut impl Read) -> Result<SaslauthdVerdict, SaslauthdError> {
    let mut count = [0u8; 2];
    stream.read_exact(&mut count).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SaslauthdError::BadResponse,
        _ => SaslauthdError::Io(e),
    })?;
    let count = usize::from(u16::from_be_bytes(count));
    if count < 2 {
        return Err(SaslauthdError::BadResponse);
    }
    let mut text = vec![0u8; count.min(MAX_REPLY)];
    stream.read_exact(&mut text).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SaslauthdError::BadResponse,
        _ => SaslauthdError::Io(e),
    })?;
    if text.starts_with(b"OK") {
        Ok(SaslauthdVerdict::Ok)
    } else {
        Ok(SaslauthdVerdict::No(
            String::from_utf8_lossy(&text).into_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread;

    #[test]
    fn request_bytes() {
        assert_eq!(
            encode_request("repl", b"secret", "csync", "").unwrap(),
            b"\x00\x04repl\x00\x06secret\x00\x05csync\x00\x00"
        );
        assert!(matches!(
            encode_request("re\0pl", b"x", "csync", ""),
            Err(SaslauthdError::Nul)
        ));
        assert!(matches!(
            encode_request("repl", b"x\0", "csync", ""),
            Err(SaslauthdError::Nul)
        ));
        assert!(matches!(
            encode_request("repl", &[b'x'; 8200], "csync", ""),
            Err(SaslauthdError::TooLarge)
        ));
    }

    #[test]
    fn realm_split_at_last_at() {
        assert_eq!(split_realm("repl"), ("repl", ""));
        assert_eq!(split_realm("repl@example.com"), ("repl", "example.com"));
        assert_eq!(split_realm("a@b@c"), ("a@b", "c"));
        assert_eq!(split_realm("repl@"), ("repl", ""));
    }

    #[test]
    fn replies() {
        let read = |bytes: &[u8]| read_reply(&mut &bytes[..]);
        assert_eq!(read(b"\x00\x02OK").unwrap(), SaslauthdVerdict::Ok);
        assert_eq!(read(b"\x00\x05OK yes").unwrap(), SaslauthdVerdict::Ok);
        assert_eq!(
            read(b"\x00\x02NO").unwrap(),
            SaslauthdVerdict::No("NO".into())
        );
        assert_eq!(
            read(b"\x00\x02ok").unwrap(),
            SaslauthdVerdict::No("ok".into())
        );
        for bad in [&b""[..], b"\x00", b"\x00\x01O", b"\x00\x00", b"\x00\x05OK"] {
            assert!(
                matches!(read(bad), Err(SaslauthdError::BadResponse)),
                "{bad:?}"
            );
        }
    }

    /// A fake saslauthd on a temporary socket: checks the exact request bytes and
    /// answers like the real one.
    #[test]
    fn fake_daemon_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mux");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let mut requests = Vec::new();
            for reply in [&b"\x00\x02OK"[..], b"\x00\x18NO authentication failed"] {
                let (mut conn, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                // Read the four counted fields.
                for _ in 0..4 {
                    let mut len = [0u8; 2];
                    conn.read_exact(&mut len).unwrap();
                    let mut field = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    conn.read_exact(&mut field).unwrap();
                    request.extend_from_slice(&len);
                    request.extend_from_slice(&field);
                }
                conn.write_all(reply).unwrap();
                requests.push(request);
            }
            requests
        });
        let client = Saslauthd::new(&path);
        assert_eq!(
            client.verify("repluser", b"secret").unwrap(),
            SaslauthdVerdict::Ok
        );
        assert_eq!(
            client.verify("repluser@replica.test", b"wrong").unwrap(),
            SaslauthdVerdict::No("NO authentication failed".into())
        );
        let requests = server.join().unwrap();
        assert_eq!(
            requests[0],
            b"\x00\x08repluser\x00\x06secret\x00\x05csync\x00\x00"
        );
        assert_eq!(
            requests[1],
            b"\x00\x08repluser\x00\x05wrong\x00\x05csync\x00\x0creplica.test"
        );
    }

    #[test]
    fn unreachable_and_silent_daemons() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Saslauthd::new(dir.path().join("nothing"));
        assert!(matches!(
            missing.verify("u", b"p"),
            Err(SaslauthdError::Connect { .. })
        ));

        let path = dir.path().join("mux");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            // Hold the connection open without answering until the client gives up.
            let mut conn = conn;
            let mut sink = Vec::new();
            let _ = conn.read_to_end(&mut sink);
        });
        let mut silent = Saslauthd::new(&path);
        silent.timeout = Duration::from_millis(200);
        assert!(matches!(
            silent.verify("u", b"p"),
            Err(SaslauthdError::Io(_))
        ));
        server.join().unwrap();
    }
}
