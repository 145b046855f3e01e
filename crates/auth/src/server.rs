//! The server side (sync_server): which mechanisms to offer and running one exchange.

use std::fmt;
use std::sync::{Arc, Mutex};

use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::config::SASLConfig;
use rsasl::mechanisms::scram::properties::ScramStoredPassword;
use rsasl::prelude::{SASLServer, Session, SessionError, State};
use rsasl::property::{AuthId, AuthzId, Password};
use rsasl::validate::{Validate, Validation, ValidationError};

use csync_protocol::sasl;

use crate::mechanism::{ALL_MECHANISMS, Mechanism};
use crate::passwd::{PasswordFile, UserSecrets};
use crate::saslauthd::{Saslauthd, SaslauthdVerdict};
use crate::scram;

/// Cyrus's LOGIN challenges (`plugins/login.c`); rsasl's own are `User Name\0` and
/// `Password\0`, which the exchange replaces.
pub const LOGIN_USERNAME_CHALLENGE: &[u8] = b"Username:";
pub const LOGIN_PASSWORD_CHALLENGE: &[u8] = b"Password:";
/// Cyrus's LOGIN refuses longer usernames and passwords with `SASL_BADPROT`.
const MAX_LOGIN_FIELD: usize = 1024;

/// How PLAIN and LOGIN passwords are checked (`sasl_pwcheck_method`), tried in order
/// until one accepts, like Cyrus's list. SCRAM needs the password file.
#[derive(Clone, Debug)]
pub enum PasswordCheck {
    /// The csync password file (SCRAM verifiers).
    File(Arc<PasswordFile>),
    /// saslauthd: the server never sees a stored secret, so only PLAIN and LOGIN work.
    Saslauthd(Saslauthd),
}

/// Server settings, named after their `imapd.conf` options.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// `servername`: the SASL realm. `user@<servername>` and `user` are the same user.
    pub servername: String,
    /// `allowplaintext`: offer PLAIN/LOGIN without TLS (upstream default no, Debian's
    /// imapd.conf sets yes).
    pub allow_plaintext: bool,
    /// `sasl_mech_list`: only these mechanisms, in this order; unknown names ignored.
    pub mech_list: Option<Vec<String>>,
    /// `admins`: authentication ids that may replicate and may proxy.
    pub admins: Vec<String>,
    /// `proxyservers`: authentication ids that may proxy (log in as someone else).
    pub proxy_servers: Vec<String>,
    /// `sasl_pwcheck_method`, in order.
    pub password_checks: Vec<PasswordCheck>,
}

impl AuthSettings {
    /// Settings with no password check yet, plaintext off, no restrictions.
    pub fn new(servername: impl Into<String>) -> Self {
        AuthSettings {
            servername: servername.into(),
            allow_plaintext: false,
            mech_list: None,
            admins: Vec::new(),
            proxy_servers: Vec::new(),
            password_checks: Vec::new(),
        }
    }
}

/// Settings that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no password check configured (password file or saslauthd)")]
    NoPasswordCheck,
}

/// Why an exchange failed, with Cyrus's reply text (`sasl_errstring`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// Wrong password, failed SCRAM proof, saslauthd said no, or a proxy login that is
    /// not allowed (`SASL_BADAUTH`).
    AuthenticationFailure,
    /// No such user (`SASL_NOUSER`).
    UserNotFound,
    /// The user has no verifier for this SCRAM hash (`SASL_NOVERIFY`).
    NoVerifier,
    /// Malformed client message (`SASL_BADPROT`); also the text for undecodable base64.
    BadProtocol,
    /// Unknown, unconfigured or restricted mechanism (`SASL_NOMECH`).
    NoMechanism,
    /// PLAIN/LOGIN without TLS and without `allowplaintext` (`SASL_ENCRYPT`).
    EncryptionNeeded,
    /// A password check could not run, e.g. saslauthd unreachable (`SASL_FAIL`).
    GenericFailure,
    /// The client sent `*`.
    Canceled,
}

impl AuthFailure {
    /// The SASL error text Cyrus puts after `NO`.
    pub fn text(self) -> &'static str {
        match self {
            AuthFailure::AuthenticationFailure => "authentication failure",
            AuthFailure::UserNotFound => "user not found",
            AuthFailure::NoVerifier => "user exists, but no verifier for user",
            AuthFailure::BadProtocol => "bad protocol / cancel",
            AuthFailure::NoMechanism => "no mechanism available",
            AuthFailure::EncryptionNeeded => "encryption needed to use mechanism",
            AuthFailure::GenericFailure => "generic failure",
            AuthFailure::Canceled => "Client canceled authentication",
        }
    }

    /// The completion line (without CRLF): `NO <text>`, or
    /// `BAD Client canceled authentication` for a cancel.
    pub fn reply(self) -> String {
        match self {
            AuthFailure::Canceled => sasl::BAD_CANCELED.to_owned(),
            other => sasl::failure_reply(other.text()),
        }
    }

    /// Cyrus sleeps `failedloginpause` before every `NO` reply, not before the `BAD`
    /// of a cancel.
    pub fn pauses(self) -> bool {
        self != AuthFailure::Canceled
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// One exchange's outcome or next challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send `+ <base64 of these bytes>` and pass the client's answer to
    /// [`ServerExchange::step`].
    Challenge(Vec<u8>),
    /// Authenticated: answer `OK Success (...)`
    /// ([`csync_protocol::sasl::success_reply`] with SSF 0). Ids are canonical:
    /// `user@<servername>` is reported as `user`. Whether the session may replicate is
    /// [`is_admin_session`].
    Success {
        authcid: String,
        authzid: Option<String>,
    },
    /// Failed: answer [`AuthFailure::reply`] (after `failedloginpause` if
    /// [`AuthFailure::pauses`]).
    Failure(AuthFailure),
}

/// Cyrus's rule for the sync server (`mysasl_proxy_policy` with `admins`): the session
/// may replicate iff the authentication id is an admin and the authorization id is
/// empty or the same. A proxy login (different authzid) is never admin.
pub fn is_admin_session(authcid: &str, authzid: Option<&str>, admins: &[String]) -> bool {
    let same = match authzid {
        None | Some("") => true,
        Some(z) => z == authcid,
    };
    same && admins.iter().any(|a| a == authcid)
}

/// The server's authentication policy and credentials. Cheap to clone; share one per
/// configuration.
#[derive(Clone, Debug)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: AuthSettings,
    /// The first password file among the checks: SCRAM's verifiers.
    scram_file: Option<Arc<PasswordFile>>,
    /// Configured mechanisms in offer order, before the TLS rule.
    configured: Vec<Mechanism>,
}

impl Authenticator {
    pub fn new(settings: AuthSettings) -> Result<Self, AuthError> {
        if settings.password_checks.is_empty() {
            return Err(AuthError::NoPasswordCheck);
        }
        let scram_file = settings.password_checks.iter().find_map(|c| match c {
            PasswordCheck::File(f) => Some(Arc::clone(f)),
            PasswordCheck::Saslauthd(_) => None,
        });
        let supported = |m: Mechanism| m.is_plaintext() || scram_file.is_some();
        let configured = match &settings.mech_list {
            None => ALL_MECHANISMS
                .into_iter()
                .filter(|&m| supported(m))
                .collect(),
            Some(list) => {
                let mut out: Vec<Mechanism> = Vec::new();
                for name in list {
                    if let Some(m) = Mechanism::from_name(name)
                        && supported(m)
                        && !out.contains(&m)
                    {
                        out.push(m);
                    }
                }
                out
            }
        };
        Ok(Authenticator {
            inner: Arc::new(Inner {
                settings,
                scram_file,
                configured,
            }),
        })
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.inner.settings
    }

    /// The `* SASL` greeting list: configured mechanisms in Cyrus's order (or
    /// `sasl_mech_list`'s), PLAIN/LOGIN only under TLS or with `allowplaintext`.
    /// Empty means the greeting has no `* SASL` line.
    pub fn mechanisms(&self, tls_active: bool) -> Vec<&'static str> {
        self.inner
            .configured
            .iter()
            .filter(|m| self.inner.plaintext_allowed(**m, tls_active))
            .map(|m| m.name())
            .collect()
    }

    /// `user@<servername>` → `user` (domain compared case-insensitively); anything else
    /// unchanged.
    pub fn canonical_userid(&self, userid: &str) -> String {
        self.inner.canonical_userid(userid)
    }

    /// Starts an exchange for `AUTHENTICATE <mechanism> [<initial response>]`
    /// (`initial_response`: `None` when absent, empty for `=`). Returns the exchange and
    /// its first step (a challenge, or already the outcome when the initial response
    /// settles it). `Err` is a failure before any exchange (reply with
    /// [`AuthFailure::reply`]).
    ///
    /// With saslauthd configured, this and [`ServerExchange::step`] may block on its
    /// socket (bounded by its timeout): call them where blocking is allowed.
    pub fn start(
        &self,
        mechanism: &str,
        initial_response: Option<&[u8]>,
        tls_active: bool,
    ) -> Result<(ServerExchange, Step), AuthFailure> {
        let mech = Mechanism::from_name(mechanism)
            .filter(|m| self.inner.configured.contains(m))
            .ok_or(AuthFailure::NoMechanism)?;
        if !self.inner.plaintext_allowed(mech, tls_active) {
            return Err(AuthFailure::EncryptionNeeded);
        }
        let notes = Arc::new(Mutex::new(None));
        let callback = ExchangeCallback {
            inner: Arc::clone(&self.inner),
            lookup_failure: Arc::clone(&notes),
        };
        let config = SASLConfig::builder()
            .with_registry(mech.rsasl_registry())
            .with_callback(callback)
            .map_err(|_| AuthFailure::GenericFailure)?;
        let session = SASLServer::<Verdict>::new(config)
            .start_suggested(mech.mechname())
            .map_err(|_| AuthFailure::GenericFailure)?;
        let mut exchange = ServerExchange {
            mechanism: mech,
            session,
            lookup_failure: notes,
            inner: Arc::clone(&self.inner),
            stage: Stage::Done,
        };
        let first = exchange.begin(initial_response);
        Ok((exchange, first))
    }
}

impl Inner {
    fn plaintext_allowed(&self, mech: Mechanism, tls_active: bool) -> bool {
        !mech.is_plaintext() || tls_active || self.settings.allow_plaintext
    }

    fn canonical_userid(&self, userid: &str) -> String {
        if let Some(at) = userid.rfind('@') {
            let (user, domain) = (&userid[..at], &userid[at + 1..]);
            if !user.is_empty() && domain.eq_ignore_ascii_case(&self.settings.servername) {
                return user.to_owned();
            }
        }
        userid.to_owned()
    }

    /// The file entry for a user: the canonical id, else `<canonical>@<servername>`
    /// (sasldb-style entries).
    fn lookup<'f>(&self, file: &'f PasswordFile, userid: &str) -> Option<&'f UserSecrets> {
        let canonical = self.canonical_userid(userid);
        file.get(&canonical)
            .or_else(|| file.get(&format!("{canonical}@{}", self.settings.servername)))
    }

    fn identity(&self, authcid: &str, authzid: Option<&str>) -> Identity {
        Identity {
            authcid: self.canonical_userid(authcid),
            authzid: authzid
                .filter(|z| !z.is_empty())
                .map(|z| self.canonical_userid(z)),
        }
    }

    /// Cyrus lets admins and proxyservers log in as someone else; anyone else asking
    /// for a different authorization id fails.
    fn authorize(&self, id: Identity) -> Result<Identity, AuthFailure> {
        match &id.authzid {
            Some(z) if *z != id.authcid => {
                let may_proxy = self
                    .settings
                    .admins
                    .iter()
                    .chain(&self.settings.proxy_servers)
                    .any(|a| *a == id.authcid);
                if may_proxy {
                    Ok(id)
                } else {
                    Err(AuthFailure::AuthenticationFailure)
                }
            }
            _ => Ok(id),
        }
    }

    /// PLAIN/LOGIN: every configured check in order until one accepts; the last
    /// failure counts (Cyrus's `_sasl_checkpass` loop).
    fn check_password(&self, authcid: &str, password: &[u8]) -> Result<(), AuthFailure> {
        let mut result = Err(AuthFailure::NoMechanism);
        for check in &self.settings.password_checks {
            result = match check {
                PasswordCheck::File(file) => match self.lookup(file, authcid) {
                    None => Err(AuthFailure::UserNotFound),
                    Some(user) if user.verify_password(password) => Ok(()),
                    Some(_) => Err(AuthFailure::AuthenticationFailure),
                },
                PasswordCheck::Saslauthd(daemon) => match daemon.verify(authcid, password) {
                    Ok(SaslauthdVerdict::Ok) => Ok(()),
                    Ok(SaslauthdVerdict::No(_)) => Err(AuthFailure::AuthenticationFailure),
                    Err(e) => {
                        tracing::warn!("saslauthd check failed: {e}");
                        Err(AuthFailure::GenericFailure)
                    }
                },
            };
            if result.is_ok() {
                break;
            }
        }
        result
    }
}

/// The identity an exchange established (canonical ids).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity {
    authcid: String,
    authzid: Option<String>,
}

/// rsasl's validation slot: the callback's verdict.
struct Verdict;
impl Validation for Verdict {
    type Value = Result<Identity, AuthFailure>;
}

/// The per-exchange rsasl callback: supplies SCRAM verifiers and judges PLAIN/LOGIN
/// passwords.
struct ExchangeCallback {
    inner: Arc<Inner>,
    /// Set when the SCRAM verifier lookup failed (user or verifier missing).
    lookup_failure: Arc<Mutex<Option<AuthFailure>>>,
}

impl SessionCallback for ExchangeCallback {
    fn callback(
        &self,
        session_data: &SessionData,
        context: &Context,
        request: &mut Request<'_>,
    ) -> Result<(), SessionError> {
        if !request.is::<ScramStoredPassword>() {
            return Ok(());
        }
        let hash = match Mechanism::from_name(session_data.mechanism().mechanism.as_str())
            .and_then(Mechanism::scram_hash)
        {
            Some(h) => h,
            None => return Ok(()),
        };
        let user = match (&self.inner.scram_file, context.get_ref::<AuthId>()) {
            (Some(file), Some(raw)) => scram::unescape(raw)
                .ok()
                .and_then(|name| self.inner.lookup(file, &name)),
            _ => None,
        };
        match user.map(|u| u.get(hash)) {
            Some(Some(secret)) => {
                request.satisfy::<ScramStoredPassword>(&ScramStoredPassword::new(
                    secret.iterations(),
                    secret.salt(),
                    secret.stored_key(),
                    secret.server_key(),
                ))?;
            }
            Some(None) => note(&self.lookup_failure, AuthFailure::NoVerifier),
            None => note(&self.lookup_failure, AuthFailure::UserNotFound),
        }
        Ok(())
    }

    fn validate(
        &self,
        session_data: &SessionData,
        context: &Context,
        validate: &mut Validate<'_>,
    ) -> Result<(), ValidationError> {
        let verdict = match Mechanism::from_name(session_data.mechanism().mechanism.as_str()) {
            Some(Mechanism::ScramSha256 | Mechanism::ScramSha1) => {
                // rsasl hands over the names as they stood in the message: unescape.
                let authcid = context.get_ref::<AuthId>().map(scram::unescape);
                let authzid = context.get_ref::<AuthzId>().map(scram::unescape);
                match (authcid, authzid) {
                    (Some(Ok(c)), None) => Ok(self.inner.identity(&c, None)),
                    (Some(Ok(c)), Some(Ok(z))) => Ok(self.inner.identity(&c, Some(&z))),
                    _ => Err(AuthFailure::BadProtocol),
                }
            }
            Some(Mechanism::Plain | Mechanism::Login) => {
                match (context.get_ref::<AuthId>(), context.get_ref::<Password>()) {
                    (Some(authcid), Some(password)) => self
                        .inner
                        .check_password(authcid, password)
                        .map(|()| self.inner.identity(authcid, context.get_ref::<AuthzId>())),
                    _ => Err(AuthFailure::BadProtocol),
                }
            }
            None => Err(AuthFailure::NoMechanism),
        };
        validate.finalize::<Verdict>(verdict);
        Ok(())
    }
}

fn note(slot: &Mutex<Option<AuthFailure>>, failure: AuthFailure) {
    let mut guard = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    *guard = Some(failure);
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    PlainResponse,
    LoginUsername,
    LoginPassword,
    ScramClientFirst,
    ScramClientFinal,
    /// The server-final message went out as a challenge; any answer completes.
    ScramAck(Identity),
    Done,
}

/// One running AUTHENTICATE exchange (server side).
pub struct ServerExchange {
    mechanism: Mechanism,
    session: Session<Verdict>,
    lookup_failure: Arc<Mutex<Option<AuthFailure>>>,
    inner: Arc<Inner>,
    stage: Stage,
}

impl fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerExchange")
            .field("mechanism", &self.mechanism)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl ServerExchange {
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// True once [`step`](Self::step) has returned `Success` or `Failure`.
    pub fn is_finished(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Feeds the client's decoded response to the next challenge. After the exchange
    /// finished, every call fails with `BadProtocol`.
    pub fn step(&mut self, client_response: &[u8]) -> Step {
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        let step = match stage {
            Stage::PlainResponse => self.plain(client_response),
            Stage::LoginUsername => self.login_username(client_response),
            Stage::LoginPassword => self.login_password(client_response),
            Stage::ScramClientFirst => self.scram_client_first(client_response),
            Stage::ScramClientFinal => self.scram_client_final(client_response),
            // Cyrus SASL ignores what the client sends here (`sent_last`).
            Stage::ScramAck(id) => Step::Success {
                authcid: id.authcid,
                authzid: id.authzid,
            },
            Stage::Done => Step::Failure(AuthFailure::BadProtocol),
        };
        if !matches!(step, Step::Challenge(_)) {
            self.stage = Stage::Done;
        }
        step
    }

    /// The client sent `*`: the exchange ends with `BAD Client canceled authentication`.
    pub fn cancel(&mut self) -> Step {
        self.stage = Stage::Done;
        Step::Failure(AuthFailure::Canceled)
    }

    /// The first step, following Cyrus SASL's `sasl_server_start`: PLAIN (client-first)
    /// without an initial response gets an empty challenge and an empty one (`=`) is a
    /// protocol error; LOGIN asks `Username:` unless the initial response is the
    /// username; SCRAM without one, or with an empty one, gets an empty challenge.
    fn begin(&mut self, initial_response: Option<&[u8]>) -> Step {
        match (self.mechanism, initial_response) {
            (Mechanism::Plain, None) => self.challenge(Stage::PlainResponse, Vec::new()),
            (Mechanism::Plain, Some(ir)) => self.finish(|s| s.plain(ir)),
            (Mechanism::Login, ir) => {
                // rsasl's LOGIN server speaks first; its prompt is replaced by Cyrus's.
                match self.run(None) {
                    Ok((State::Running, _)) => {}
                    _ => return self.fail(AuthFailure::GenericFailure),
                }
                match ir {
                    None | Some(b"") => {
                        self.challenge(Stage::LoginUsername, LOGIN_USERNAME_CHALLENGE.to_vec())
                    }
                    Some(user) => self.finish(|s| s.login_username(user)),
                }
            }
            (Mechanism::ScramSha256 | Mechanism::ScramSha1, None | Some(b"")) => {
                self.challenge(Stage::ScramClientFirst, Vec::new())
            }
            (Mechanism::ScramSha256 | Mechanism::ScramSha1, Some(first)) => {
                self.finish(|s| s.scram_client_first(first))
            }
        }
    }

    fn finish(&mut self, f: impl FnOnce(&mut Self) -> Step) -> Step {
        let step = f(self);
        if !matches!(step, Step::Challenge(_)) {
            self.stage = Stage::Done;
        }
        step
    }

    fn challenge(&mut self, next: Stage, bytes: Vec<u8>) -> Step {
        self.stage = next;
        Step::Challenge(bytes)
    }

    fn fail(&mut self, failure: AuthFailure) -> Step {
        self.stage = Stage::Done;
        Step::Failure(failure)
    }

    fn run(&mut self, input: Option<&[u8]>) -> Result<(State, Vec<u8>), SessionError> {
        let mut out = Vec::new();
        let state = self.session.step(input, &mut out)?;
        Ok((state, out))
    }

    /// The callback's verdict, with the proxy rule applied.
    fn verdict(&mut self) -> Result<Identity, AuthFailure> {
        match self.session.validation() {
            Some(Ok(id)) => self.inner.authorize(id),
            Some(Err(failure)) => Err(failure),
            None => Err(AuthFailure::AuthenticationFailure),
        }
    }

    fn outcome(&mut self) -> Step {
        match self.verdict() {
            Ok(id) => Step::Success {
                authcid: id.authcid,
                authzid: id.authzid,
            },
            Err(failure) => Step::Failure(failure),
        }
    }

    fn plain(&mut self, message: &[u8]) -> Step {
        match self.run(Some(message)) {
            Ok((State::Finished(_), _)) => self.outcome(),
            _ => Step::Failure(AuthFailure::BadProtocol),
        }
    }

    fn login_username(&mut self, username: &[u8]) -> Step {
        if username.len() > MAX_LOGIN_FIELD || username.contains(&0) {
            return Step::Failure(AuthFailure::BadProtocol);
        }
        match self.run(Some(username)) {
            Ok((State::Running, _)) => {
                self.challenge(Stage::LoginPassword, LOGIN_PASSWORD_CHALLENGE.to_vec())
            }
            _ => Step::Failure(AuthFailure::BadProtocol),
        }
    }

    fn login_password(&mut self, password: &[u8]) -> Step {
        if password.len() > MAX_LOGIN_FIELD || password.contains(&0) {
            return Step::Failure(AuthFailure::BadProtocol);
        }
        match self.run(Some(password)) {
            Ok((State::Finished(_), _)) => self.outcome(),
            _ => Step::Failure(AuthFailure::BadProtocol),
        }
    }

    fn scram_client_first(&mut self, message: &[u8]) -> Step {
        // Only well-formed messages reach rsasl (its parser panics on short attributes).
        if scram::check_client_first(message).is_err() {
            return Step::Failure(AuthFailure::BadProtocol);
        }
        let result = self.run(Some(message));
        let lookup = self
            .lookup_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(failure) = lookup {
            // Cyrus fails right after the client-first message (no fake salt).
            return Step::Failure(failure);
        }
        match result {
            Ok((State::Running, server_first)) => {
                self.challenge(Stage::ScramClientFinal, server_first)
            }
            _ => Step::Failure(AuthFailure::BadProtocol),
        }
    }

    fn scram_client_final(&mut self, message: &[u8]) -> Step {
        if scram::check_client_final(message).is_err() {
            return Step::Failure(AuthFailure::BadProtocol);
        }
        match self.run(Some(message)) {
            // rsasl writes `e=...` and sets no verdict when the proof is wrong; Cyrus
            // answers NO without sending anything, and so does this.
            Ok((State::Finished(_), server_final)) => match self.verdict() {
                Ok(id) => self.challenge(Stage::ScramAck(id), server_final),
                Err(failure) => Step::Failure(failure),
            },
            _ => Step::Failure(AuthFailure::BadProtocol),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send + Sync>() {}

    #[test]
    fn types_are_send() {
        assert_send::<Authenticator>();
        fn assert_send_only<T: Send>() {}
        assert_send_only::<ServerExchange>();
    }

    #[test]
    fn admin_rule() {
        let admins = vec!["repl".to_owned(), "cyrus".to_owned()];
        assert!(is_admin_session("repl", None, &admins));
        assert!(is_admin_session("repl", Some(""), &admins));
        assert!(is_admin_session("repl", Some("repl"), &admins));
        assert!(!is_admin_session("repl", Some("cyrus"), &admins));
        assert!(!is_admin_session("alice", None, &admins));
        assert!(!is_admin_session("Repl", None, &admins));
    }

    #[test]
    fn failure_replies() {
        assert_eq!(
            AuthFailure::AuthenticationFailure.reply(),
            "NO authentication failure"
        );
        assert_eq!(AuthFailure::UserNotFound.reply(), "NO user not found");
        assert_eq!(AuthFailure::BadProtocol.reply(), sasl::NO_BAD_PROTOCOL);
        assert_eq!(AuthFailure::Canceled.reply(), sasl::BAD_CANCELED);
        assert_eq!(
            AuthFailure::EncryptionNeeded.reply(),
            "NO encryption needed to use mechanism"
        );
        assert_eq!(
            AuthFailure::NoMechanism.reply(),
            "NO no mechanism available"
        );
        assert!(!AuthFailure::Canceled.pauses());
        assert!(AuthFailure::UserNotFound.pauses());
    }
}
