//! The csync password file: salted SCRAM verifiers, managed like sasldb.
//!
//! # Format
//!
//! UTF-8 text, one user per line, `#` comment lines and empty lines ignored:
//!
//! ```text
//! # csync password file
//! repluser:SCRAM-SHA-256$4096:<b64 salt>$<b64 StoredKey>:<b64 ServerKey> SCRAM-SHA-1$4096:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>
//! ```
//!
//! * The userid runs to the first `:`. Userids are 1–1024 bytes with no `:`, no
//!   whitespace, no control characters, and do not start with `#`.
//! * Then one or two verifiers separated by spaces, each in RFC 5803's form
//!   `<mechanism>$<iterations>:<salt>$<StoredKey>:<ServerKey>`, with standard padded
//!   base64. `set` always writes both (each with its own random 16-byte salt) so both
//!   SCRAM mechanisms work; a hand-made line may carry just one, and then only that
//!   SCRAM mechanism works for the user (PLAIN/LOGIN use whichever exists, SHA-256 first).
//! * Iteration counts must lie in [`MIN_ITERATIONS`]..=[`MAX_ITERATIONS`]: Cyrus's SCRAM
//!   server never uses fewer than 4096 and Cyrus's SCRAM client refuses more than 65536.
//!   The default for new entries is [`DEFAULT_ITERATIONS`].
//! * No plaintext is stored. PLAIN and LOGIN passwords are checked by deriving the keys
//!   with the stored salt and iterations and comparing StoredKey in constant time.
//!
//! # Permissions
//!
//! The verifiers allow offline dictionary attacks and (with ServerKey) impersonating the
//! server, so [`PasswordFile::load`] **refuses** a file that group or others may access
//! in any way (`mode & 0o077 != 0`) or that is not a regular file; the error says to
//! `chmod 600`. [`PasswordFile::save`] always writes mode 0600.
//!
//! # Saving
//!
//! [`PasswordFile::save`] writes a temporary file (mode 0600) in the same directory,
//! fsyncs it, renames it over the file and fsyncs the directory, so a reader sees either
//! the old or the new file, whole, and a crash leaves one of the two. Comments in the old
//! file are not kept. [`PasswordFile::update`] serialises concurrent updaters with an
//! exclusive lock on `<file>.lock`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

use crate::scram::ScramHash;

/// Iterations for new entries unless configured otherwise.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Fewest iterations accepted (Cyrus SASL's `MIN_ITERATION_COUNTER`, RFC 7677's minimum).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most iterations accepted: Cyrus SASL's SCRAM client refuses a larger count
/// (`MAX_ITERATION_COUNTER`, "iteration-count is too big, refusing to compute").
pub const MAX_ITERATIONS: u32 = 65536;
/// Salt length for new entries (Cyrus SASL's `SALT_SIZE`).
pub const SALT_LEN: usize = 16;
/// Longest userid accepted (saslauthd's `MAX_REQ_LEN`, Cyrus's LOGIN limit).
pub const MAX_USERID_LEN: usize = 1024;
/// Longest password accepted by [`PasswordFile::set`].
pub const MAX_PASSWORD_LEN: usize = 1024;

const MAX_SALT_LEN: usize = 1024;
const HEADER: &str = "# csync password file: userid:SCRAM-SHA-256$<i>:<salt>$<StoredKey>:<ServerKey> SCRAM-SHA-1$... (RFC 5803); mode 0600\n";

/// Everything that can go wrong with the password file. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{}: mode {mode:04o} lets group or others access it; it must be 0600 (chmod 600 {})",
        path.display(),
        path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{} line {line}: {reason}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("{} line {line}: user {userid:?} appears twice", path.display())]
    DuplicateUser {
        path: PathBuf,
        line: usize,
        userid: String,
    },
    #[error("invalid userid {0:?}: {1}")]
    InvalidUserid(String, &'static str),
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
    #[error("iteration count {0} outside {MIN_ITERATIONS}..={MAX_ITERATIONS}")]
    Iterations(u32),
    #[error("no system randomness: {0}")]
    Random(String),
}

/// One SCRAM verifier (RFC 5803): iterations, salt, StoredKey, ServerKey.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    hash: ScramHash,
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("hash", &self.hash)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramSecret {
    /// Derives a verifier for `password` with a fresh random salt.
    pub fn generate(
        hash: ScramHash,
        password: &[u8],
        iterations: u32,
    ) -> Result<Self, PasswordFileError> {
        check_iterations(iterations)?;
        let mut salt = vec![0u8; SALT_LEN];
        getrandom::getrandom(&mut salt).map_err(|e| PasswordFileError::Random(e.to_string()))?;
        Ok(Self::derive(hash, password, salt, iterations))
    }

    /// Derives a verifier for `password` with the given salt (tests, known vectors).
    pub fn with_salt(
        hash: ScramHash,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, PasswordFileError> {
        check_iterations(iterations)?;
        if salt.is_empty() || salt.len() > MAX_SALT_LEN {
            return Err(PasswordFileError::InvalidPassword("salt length"));
        }
        Ok(Self::derive(hash, password, salt.to_vec(), iterations))
    }

    fn derive(hash: ScramHash, password: &[u8], salt: Vec<u8>, iterations: u32) -> Self {
        let keys = hash.derive_keys(password, &salt, iterations);
        ScramSecret {
            hash,
            iterations,
            salt,
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        }
    }

    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub fn stored_key(&self) -> &[u8] {
        &self.stored_key
    }

    pub fn server_key(&self) -> &[u8] {
        &self.server_key
    }

    /// Whether `password` derives this verifier's StoredKey (compared in constant time).
    pub fn verify(&self, password: &[u8]) -> bool {
        let keys = self.hash.derive_keys(password, &self.salt, self.iterations);
        keys.stored_key.ct_eq(&self.stored_key).into()
    }

    /// RFC 5803 text: `SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`.
    pub fn encode(&self) -> String {
        format!(
            "{}${}:{}${}:{}",
            self.hash.mechanism(),
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }

    /// Parses RFC 5803 text; the error is a fixed description.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let (scheme, rest) = text.split_once('$').ok_or("verifier without `$`")?;
        let hash = match scheme {
            "SCRAM-SHA-256" => ScramHash::Sha256,
            "SCRAM-SHA-1" => ScramHash::Sha1,
            _ => return Err("unknown scheme (SCRAM-SHA-256 or SCRAM-SHA-1 expected)"),
        };
        let (params, keys) = rest.split_once('$').ok_or("verifier without keys")?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or("verifier without `<iterations>:<salt>`")?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or("verifier without `<StoredKey>:<ServerKey>`")?;
        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err("iteration count is not a number");
        }
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| "iteration count is not a number")?;
        if check_iterations(iterations).is_err() {
            return Err("iteration count outside 4096..=65536");
        }
        let decode = |v: &str| STANDARD.decode(v).map_err(|_| "invalid base64");
        let salt = decode(salt)?;
        if salt.is_empty() || salt.len() > MAX_SALT_LEN {
            return Err("salt length");
        }
        let stored_key = decode(stored_key)?;
        let server_key = decode(server_key)?;
        if stored_key.len() != hash.output_len() || server_key.len() != hash.output_len() {
            return Err("key length does not match the hash");
        }
        Ok(ScramSecret {
            hash,
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }
}

fn check_iterations(iterations: u32) -> Result<(), PasswordFileError> {
    if (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        Ok(())
    } else {
        Err(PasswordFileError::Iterations(iterations))
    }
}

/// A user's verifiers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserSecrets {
    sha256: Option<ScramSecret>,
    sha1: Option<ScramSecret>,
}

impl UserSecrets {
    /// The verifier for one SCRAM hash, if stored.
    pub fn get(&self, hash: ScramHash) -> Option<&ScramSecret> {
        match hash {
            ScramHash::Sha256 => self.sha256.as_ref(),
            ScramHash::Sha1 => self.sha1.as_ref(),
        }
    }

    /// PLAIN/LOGIN check: derives with the SHA-256 verifier's salt (else SHA-1's) and
    /// compares StoredKey in constant time.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        match self.sha256.as_ref().or(self.sha1.as_ref()) {
            Some(secret) => secret.verify(password),
            None => false,
        }
    }

    fn set(&mut self, secret: ScramSecret) -> Result<(), &'static str> {
        let slot = match secret.hash {
            ScramHash::Sha256 => &mut self.sha256,
            ScramHash::Sha1 => &mut self.sha1,
        };
        if slot.is_some() {
            return Err("the same scheme appears twice");
        }
        *slot = Some(secret);
        Ok(())
    }

    fn encode(&self) -> String {
        [self.sha256.as_ref(), self.sha1.as_ref()]
            .into_iter()
            .flatten()
            .map(ScramSecret::encode)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Outcome of checking a password against the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordCheckResult {
    Ok,
    WrongPassword,
    NoSuchUser,
}

/// The password file in memory, with the path it is saved to.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordFile {
    path: PathBuf,
    iterations: u32,
    users: BTreeMap<String, UserSecrets>,
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("path", &self.path)
            .field("iterations", &self.iterations)
            .field("users", &self.users.len())
            .finish()
    }
}

impl PasswordFile {
    /// An empty file that will be saved to `path` (nothing is written yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        PasswordFile {
            path: path.into(),
            iterations: DEFAULT_ITERATIONS,
            users: BTreeMap::new(),
        }
    }

    /// Reads and checks the file (see the module docs for format and permissions).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, PasswordFileError> {
        let path = path.into();
        let io_err = |source| PasswordFileError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io_err)?;
        // Checked on the open file, so the file checked is the file read.
        let meta = file.metadata().map_err(io_err)?;
        if !meta.file_type().is_file() {
            return Err(PasswordFileError::NotAFile { path });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(PasswordFileError::InsecurePermissions { path, mode });
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err)?;
        Self::parse(path, &bytes)
    }

    /// [`load`](Self::load), or an empty file if `path` does not exist.
    pub fn load_or_new(path: impl Into<PathBuf>) -> Result<Self, PasswordFileError> {
        let path = path.into();
        match Self::load(path.clone()) {
            Err(PasswordFileError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                Ok(Self::new(path))
            }
            other => other,
        }
    }

    /// Parses file contents; `path` is only used in messages and for saving.
    pub fn parse(path: impl Into<PathBuf>, bytes: &[u8]) -> Result<Self, PasswordFileError> {
        let path = path.into();
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let line = 1 + bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                return Err(PasswordFileError::Syntax {
                    path,
                    line,
                    reason: "not UTF-8",
                });
            }
        };
        let mut users = BTreeMap::new();
        for (index, line) in text.split('\n').enumerate() {
            let number = index + 1;
            let syntax = |reason| PasswordFileError::Syntax {
                path: path.clone(),
                line: number,
                reason,
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (userid, rest) = line
                .split_once(':')
                .ok_or(syntax("no `:` after the userid"))?;
            if let Err(reason) = userid_problem(userid) {
                return Err(syntax(reason));
            }
            if rest.chars().any(|c| c.is_control()) {
                return Err(syntax("control character"));
            }
            let mut secrets = UserSecrets::default();
            let mut any = false;
            for token in rest.split(' ').filter(|t| !t.is_empty()) {
                let secret = ScramSecret::parse(token).map_err(syntax)?;
                secrets.set(secret).map_err(syntax)?;
                any = true;
            }
            if !any {
                return Err(syntax("no verifier"));
            }
            if users.insert(userid.to_owned(), secrets).is_some() {
                return Err(PasswordFileError::DuplicateUser {
                    path,
                    line: number,
                    userid: userid.to_owned(),
                });
            }
        }
        Ok(PasswordFile {
            path,
            iterations: DEFAULT_ITERATIONS,
            users,
        })
    }

    /// Loads (or starts) the file under an exclusive lock on `<path>.lock`, lets `change`
    /// modify it, and saves it if `change` succeeded. Concurrent updaters (two admins
    /// running the management tool) queue on the lock instead of losing each other's
    /// changes. Readers (the server) need no lock: saves are atomic.
    pub fn update<T>(
        path: impl Into<PathBuf>,
        change: impl FnOnce(&mut PasswordFile) -> Result<T, PasswordFileError>,
    ) -> Result<T, PasswordFileError> {
        let path = path.into();
        let mut lock_name = path.clone().into_os_string();
        lock_name.push(".lock");
        let lock_path = PathBuf::from(lock_name);
        let io_err = |source| PasswordFileError::Io {
            path: lock_path.clone(),
            source,
        };
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err)?;
        lock.lock().map_err(io_err)?;
        let mut file = Self::load_or_new(path)?;
        let result = change(&mut file)?;
        file.save()?;
        drop(lock);
        Ok(result)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Iterations used by [`set`](Self::set).
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Sets the iterations for later [`set`](Self::set) calls (existing entries keep theirs).
    pub fn set_iterations(&mut self, iterations: u32) -> Result<(), PasswordFileError> {
        check_iterations(iterations)?;
        self.iterations = iterations;
        Ok(())
    }

    /// Creates or replaces a user's verifiers (both SCRAM hashes, fresh salts).
    ///
    /// The password must be 1–1024 bytes without NUL and unchanged by SASLprep
    /// (RFC 4013): rsasl's PLAIN server SASLpreps what it receives while SCRAM (as in
    /// Cyrus) hashes the raw bytes, so only such passwords check the same way under
    /// every mechanism. Printable ASCII always qualifies.
    pub fn set(&mut self, userid: &str, password: &str) -> Result<(), PasswordFileError> {
        if let Err(reason) = userid_problem(userid) {
            return Err(PasswordFileError::InvalidUserid(userid.to_owned(), reason));
        }
        check_new_password(password)?;
        let secrets = UserSecrets {
            sha256: Some(ScramSecret::generate(
                ScramHash::Sha256,
                password.as_bytes(),
                self.iterations,
            )?),
            sha1: Some(ScramSecret::generate(
                ScramHash::Sha1,
                password.as_bytes(),
                self.iterations,
            )?),
        };
        self.users.insert(userid.to_owned(), secrets);
        Ok(())
    }

    /// Stores verifiers as given (import, tests). The userid is checked.
    pub fn insert(
        &mut self,
        userid: &str,
        secrets: impl IntoIterator<Item = ScramSecret>,
    ) -> Result<(), PasswordFileError> {
        if let Err(reason) = userid_problem(userid) {
            return Err(PasswordFileError::InvalidUserid(userid.to_owned(), reason));
        }
        let mut user = UserSecrets::default();
        for secret in secrets {
            user.set(secret)
                .map_err(|r| PasswordFileError::InvalidUserid(userid.to_owned(), r))?;
        }
        if user.sha1.is_none() && user.sha256.is_none() {
            return Err(PasswordFileError::InvalidUserid(
                userid.to_owned(),
                "no verifier",
            ));
        }
        self.users.insert(userid.to_owned(), user);
        Ok(())
    }

    /// Removes a user; `false` if there was none.
    pub fn remove(&mut self, userid: &str) -> bool {
        self.users.remove(userid).is_some()
    }

    /// A user's verifiers (exact, case-sensitive userid).
    pub fn get(&self, userid: &str) -> Option<&UserSecrets> {
        self.users.get(userid)
    }

    pub fn contains(&self, userid: &str) -> bool {
        self.users.contains_key(userid)
    }

    /// Userids in sorted order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a plaintext password (PLAIN/LOGIN) for an exact userid.
    pub fn check_password(&self, userid: &str, password: &[u8]) -> PasswordCheckResult {
        match self.users.get(userid) {
            None => PasswordCheckResult::NoSuchUser,
            Some(secrets) if secrets.verify_password(password) => PasswordCheckResult::Ok,
            Some(_) => PasswordCheckResult::WrongPassword,
        }
    }

    /// The file's text as [`save`](Self::save) writes it.
    pub fn to_text(&self) -> String {
        let mut out = String::from(HEADER);
        for (userid, secrets) in &self.users {
            out.push_str(userid);
            out.push(':');
            out.push_str(&secrets.encode());
            out.push('\n');
        }
        out
    }

    /// Writes the file atomically: temporary file (0600) in the same directory, fsync,
    /// rename over the file, fsync the directory.
    pub fn save(&self) -> Result<(), PasswordFileError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PasswordFileError::Io { path, source }
        };
        let name = self
            .path
            .file_name()
            .ok_or_else(|| PasswordFileError::NotAFile {
                path: self.path.clone(),
            })?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut random = [0u8; 8];
        getrandom::getrandom(&mut random).map_err(|e| PasswordFileError::Random(e.to_string()))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".tmp.{}.{:016x}",
            std::process::id(),
            u64::from_le_bytes(random)
        ));
        let tmp = dir.join(tmp_name);

        let written = (|| -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            // The umask can only clear bits; make sure the owner can read it back.
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            file.write_all(self.to_text().as_bytes())?;
            file.sync_all()?;
            Ok(())
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&self.path)(e));
        }
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))
    }
}

/// Why a userid cannot be stored, if it cannot.
pub(crate) fn userid_problem(userid: &str) -> Result<(), &'static str> {
    if userid.is_empty() {
        Err("empty userid")
    } else if userid.len() > MAX_USERID_LEN {
        Err("userid longer than 1024 bytes")
    } else if userid.contains(':') {
        Err("userid contains `:`")
    } else if userid.chars().any(char::is_whitespace) {
        Err("userid contains whitespace")
    } else if userid.chars().any(char::is_control) {
        Err("userid contains a control character")
    } else if userid.starts_with('#') {
        Err("userid starts with `#`")
    } else {
        Ok(())
    }
}

fn check_new_password(password: &str) -> Result<(), PasswordFileError> {
    if password.is_empty() {
        return Err(PasswordFileError::InvalidPassword("empty"));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(PasswordFileError::InvalidPassword("longer than 1024 bytes"));
    }
    if password.contains('\0') {
        return Err(PasswordFileError::InvalidPassword("contains NUL"));
    }
    match stringprep::saslprep(password) {
        Ok(prepped) if prepped == password => Ok(()),
        Ok(_) => Err(PasswordFileError::InvalidPassword(
            "changed by SASLprep (RFC 4013); PLAIN and SCRAM would disagree",
        )),
        Err(_) => Err(PasswordFileError::InvalidPassword(
            "refused by SASLprep (RFC 4013): control or unassigned characters",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5803 §4's example entry (user "user", password "pencil").
    const RFC5803_SHA1: &str = "SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=";

    #[test]
    fn rfc5803_example_parses_and_verifies() {
        let secret = ScramSecret::parse(RFC5803_SHA1).unwrap();
        assert_eq!(secret.hash(), ScramHash::Sha1);
        assert_eq!(secret.iterations(), 4096);
        assert!(secret.verify(b"pencil"));
        assert!(!secret.verify(b"pencil "));
        assert_eq!(secret.encode(), RFC5803_SHA1);
        let salt = STANDARD.decode("QSXCR+Q6sek8bf92").unwrap();
        let derived = ScramSecret::with_salt(ScramHash::Sha1, b"pencil", &salt, 4096).unwrap();
        assert_eq!(derived, secret);
    }

    #[test]
    fn debug_shows_no_secrets() {
        let secret = ScramSecret::parse(RFC5803_SHA1).unwrap();
        let text = format!("{secret:?}");
        assert!(!text.contains("QSXCR"), "{text}");
        assert!(!text.contains("6dlG"), "{text}");
        let mut file = PasswordFile::new("/nonexistent/passwd");
        file.set("repl", "secret").unwrap();
        let text = format!("{file:?} {:?}", file.get("repl"));
        assert!(!text.contains("secret"), "{text}");
        assert!(!text.contains("SCRAM-SHA-256$"), "{text}");
    }

    #[test]
    fn set_writes_both_schemes() {
        let mut file = PasswordFile::new("/nonexistent/passwd");
        file.set("repluser", "secret").unwrap();
        let user = file.get("repluser").unwrap();
        let sha256 = user.get(ScramHash::Sha256).unwrap();
        let sha1 = user.get(ScramHash::Sha1).unwrap();
        assert_eq!(sha256.iterations(), DEFAULT_ITERATIONS);
        assert_eq!(sha256.salt().len(), SALT_LEN);
        assert_ne!(sha256.salt(), sha1.salt());
        assert_eq!(
            file.check_password("repluser", b"secret"),
            PasswordCheckResult::Ok
        );
        assert_eq!(
            file.check_password("repluser", b"Secret"),
            PasswordCheckResult::WrongPassword
        );
        assert_eq!(
            file.check_password("nobody", b"secret"),
            PasswordCheckResult::NoSuchUser
        );
        let line = file.to_text();
        let entry = line.lines().nth(1).unwrap();
        assert!(entry.starts_with("repluser:SCRAM-SHA-256$4096:"), "{entry}");
        assert!(entry.contains(" SCRAM-SHA-1$4096:"), "{entry}");
    }

    #[test]
    fn userids_refused() {
        let mut file = PasswordFile::new("/nonexistent/passwd");
        for bad in [
            "", "a:b", "a b", "a\tb", "a\nb", "a\rb", "a\u{7f}", "a\u{0}", "#x", "a\u{a0}b",
        ] {
            assert!(
                matches!(
                    file.set(bad, "secret"),
                    Err(PasswordFileError::InvalidUserid(..))
                ),
                "{bad:?}"
            );
        }
        assert!(file.set(&"a".repeat(1025), "secret").is_err());
        for good in ["repl", "user@example.com", "user.name", "a#b", "ünï"] {
            file.set(good, "secret").unwrap();
        }
    }

    #[test]
    fn passwords_refused() {
        let mut file = PasswordFile::new("/nonexistent/passwd");
        for bad in ["", "a\0b", "a\u{1}b", "x\u{a0}y", "\u{fb01}"] {
            assert!(
                matches!(
                    file.set("u", bad),
                    Err(PasswordFileError::InvalidPassword(_))
                ),
                "{bad:?}"
            );
        }
        assert!(file.set("u", &"p".repeat(1025)).is_err());
        file.set("u", "pässwörd with spaces!").unwrap();
        assert_eq!(
            file.check_password("u", "pässwörd with spaces!".as_bytes()),
            PasswordCheckResult::Ok
        );
    }

    #[test]
    fn iterations_bounds() {
        let mut file = PasswordFile::new("/nonexistent/passwd");
        assert!(file.set_iterations(4095).is_err());
        assert!(file.set_iterations(65537).is_err());
        file.set_iterations(8192).unwrap();
        file.set("u", "pw").unwrap();
        assert_eq!(
            file.get("u")
                .unwrap()
                .get(ScramHash::Sha1)
                .unwrap()
                .iterations(),
            8192
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        let good = format!("# comment\n\nuser:{RFC5803_SHA1}\n");
        let file = PasswordFile::parse("p", good.as_bytes()).unwrap();
        assert_eq!(file.users().collect::<Vec<_>>(), ["user"]);
        assert!(file.get("user").unwrap().get(ScramHash::Sha256).is_none());
        assert_eq!(
            file.check_password("user", b"pencil"),
            PasswordCheckResult::Ok
        );

        let cases: &[(&str, usize)] = &[
            ("nocolon\n", 1),
            ("#c\nuser:\n", 2),
            ("user:SCRAM-MD5$1:a$b:c\n", 1),
            ("user:SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$6dlG:D+CS\n", 1),
            (
                "user:SCRAM-SHA-1$100:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=\n",
                1,
            ),
            ("user:SCRAM-SHA-1$99999999999:QQ==$QQ==:QQ==\n", 1),
            ("user:SCRAM-SHA-1$4096:QQ=$QQ==:QQ==\n", 1),
            ("user:SCRAM-SHA-1$4096:QQ==\n", 1),
            ("a b:x\n", 1),
            ("\r\n", 1),
        ];
        for (text, line) in cases {
            match PasswordFile::parse("p", text.as_bytes()) {
                Err(PasswordFileError::Syntax { line: l, .. }) => assert_eq!(l, *line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let dup = format!("user:{RFC5803_SHA1}\nuser:{RFC5803_SHA1}\n");
        assert!(matches!(
            PasswordFile::parse("p", dup.as_bytes()),
            Err(PasswordFileError::DuplicateUser { line: 2, .. })
        ));
        let twice = format!("user:{RFC5803_SHA1} {RFC5803_SHA1}\n");
        assert!(matches!(
            PasswordFile::parse("p", twice.as_bytes()),
            Err(PasswordFileError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            PasswordFile::parse("p", b"ok:x\n\xff\n"),
            Err(PasswordFileError::Syntax { line: 2, .. })
        ));
    }
}
