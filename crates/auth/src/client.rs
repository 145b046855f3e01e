//! The client side (sync_client): choosing a mechanism and answering challenges.
//!
//! ```text
//! let mut ex = ClientExchange::new(&offered, tls, allowplaintext, "repl", pw, None)?;
//! send Authenticate { mechanism: ex.mechanism().name(), initial_response: ex.initial_response() }
//! loop on server lines:
//!   `+ <challenge>` → match ex.step(&challenge)? { Response(r) => send r, Done => send "" }
//!   `OK ...`        → ex.finish()?   (a SCRAM server must have proved itself)
//!   `NO`/`BAD`      → failed
//! ```

use std::fmt;

use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::config::SASLConfig;
use rsasl::prelude::{SASLClient, Session, SessionError, State};
use rsasl::property::{AuthId, AuthzId, Password};
use zeroize::Zeroizing;

use crate::mechanism::Mechanism;
use crate::passwd::MAX_ITERATIONS;
use crate::scram::{self, ServerFinal};

/// What to send next.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientStep {
    /// Send these bytes as the response line (they may carry the password: do not log).
    Response(Vec<u8>),
    /// The mechanism is complete and, for SCRAM, the server's signature verified. The
    /// framing still needs an answer to the challenge: send an empty response line,
    /// then expect the completion line.
    Done,
}

impl fmt::Debug for ClientStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientStep::Response(bytes) => write!(f, "Response(<{} bytes>)", bytes.len()),
            ClientStep::Done => f.write_str("Done"),
        }
    }
}

impl ClientStep {
    /// The bytes to send: the response, or nothing for `Done`.
    pub fn response(&self) -> &[u8] {
        match self {
            ClientStep::Response(bytes) => bytes,
            ClientStep::Done => &[],
        }
    }
}

/// Client-side failures.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// None of the offered mechanisms can be used. `plaintext_withheld`: PLAIN or LOGIN
    /// was offered but not allowed without TLS, so STARTTLS (if offered) would help.
    #[error("no usable SASL mechanism offered")]
    NoMechanism { plaintext_withheld: bool },
    #[error("invalid credentials: {0}")]
    InvalidCredentials(&'static str),
    #[error("malformed server challenge")]
    MalformedChallenge,
    #[error("server asks for {0} SCRAM iterations (more than {MAX_ITERATIONS})")]
    TooManyIterations(u32),
    #[error("server reported SCRAM error: {0}")]
    ServerError(String),
    #[error("the server's SCRAM signature is wrong: it does not know the password")]
    ServerNotAuthenticated,
    #[error("challenge after the mechanism finished")]
    UnexpectedChallenge,
    #[error("server accepted before the exchange completed")]
    Incomplete,
    #[error("SASL mechanism error: {0}")]
    Mechanism(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// PLAIN's only message went out as the initial response.
    PlainSent,
    LoginUsername,
    LoginPassword,
    LoginSent,
    ScramFirstSent,
    ScramFinalSent,
    ScramVerified,
    Failed,
}

/// One AUTHENTICATE exchange (client side).
pub struct ClientExchange {
    mechanism: Mechanism,
    session: Session,
    initial_response: Option<Vec<u8>>,
    stage: Stage,
}

impl fmt::Debug for ClientExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientExchange")
            .field("mechanism", &self.mechanism)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

/// Supplies the credentials to rsasl's client mechanisms.
struct Credentials {
    authcid: String,
    password: Zeroizing<String>,
    authzid: Option<String>,
}

impl SessionCallback for Credentials {
    fn callback(
        &self,
        _session_data: &SessionData,
        _context: &Context,
        request: &mut Request<'_>,
    ) -> Result<(), SessionError> {
        request
            .satisfy::<AuthId>(&self.authcid)?
            .satisfy::<Password>(self.password.as_bytes())?;
        if let Some(authzid) = &self.authzid {
            request.satisfy::<AuthzId>(authzid)?;
        }
        Ok(())
    }
}

impl ClientExchange {
    /// Picks SCRAM-SHA-256, else SCRAM-SHA-1, else PLAIN, else LOGIN among `offered`
    /// (names from the `* SASL` line, matched case-insensitively; `-PLUS` variants are
    /// ignored). PLAIN/LOGIN only when `tls_active` or `allow_plaintext`; LOGIN cannot
    /// carry an authorization id, so it is skipped when one is requested. An empty
    /// `authzid` counts as none (the Cyrus client sends PLAIN as `\0user\0password`).
    pub fn new(
        offered: &[String],
        tls_active: bool,
        allow_plaintext: bool,
        authcid: &str,
        password: &str,
        authzid: Option<&str>,
    ) -> Result<Self, ClientError> {
        if authcid.is_empty() {
            return Err(ClientError::InvalidCredentials("empty authentication id"));
        }
        if password.is_empty() {
            return Err(ClientError::InvalidCredentials("empty password"));
        }
        let authzid = authzid.filter(|z| !z.is_empty());
        if authcid.contains('\0')
            || password.contains('\0')
            || authzid.is_some_and(|z| z.contains('\0'))
        {
            return Err(ClientError::InvalidCredentials("NUL in a credential"));
        }
        let plaintext_ok = tls_active || allow_plaintext;
        let mut plaintext_withheld = false;
        let mut chosen = None;
        for mech in [
            Mechanism::ScramSha256,
            Mechanism::ScramSha1,
            Mechanism::Plain,
            Mechanism::Login,
        ] {
            if !offered.iter().any(|o| o.eq_ignore_ascii_case(mech.name())) {
                continue;
            }
            if mech.is_plaintext() && !plaintext_ok {
                plaintext_withheld = true;
                continue;
            }
            if mech == Mechanism::Login && authzid.is_some_and(|z| z != authcid) {
                continue;
            }
            chosen = Some(mech);
            break;
        }
        let mechanism = chosen.ok_or(ClientError::NoMechanism { plaintext_withheld })?;
        Self::with_mechanism(mechanism, authcid, password, authzid)
    }

    /// Uses exactly `mechanism` (e.g. a configured `force_sasl_client_mech`).
    pub fn with_mechanism(
        mechanism: Mechanism,
        authcid: &str,
        password: &str,
        authzid: Option<&str>,
    ) -> Result<Self, ClientError> {
        let authzid = authzid.filter(|z| !z.is_empty());
        let credentials = Credentials {
            authcid: authcid.to_owned(),
            password: Zeroizing::new(password.to_owned()),
            // LOGIN has no authzid; with the same id as authcid it is simply dropped.
            authzid: authzid
                .filter(|z| mechanism != Mechanism::Login || *z != authcid)
                .map(str::to_owned),
        };
        if mechanism == Mechanism::Login && credentials.authzid.is_some() {
            return Err(ClientError::InvalidCredentials(
                "LOGIN cannot carry an authorization id",
            ));
        }
        let config = SASLConfig::builder()
            .with_registry(mechanism.rsasl_registry())
            .with_callback(credentials)
            .map_err(|e| ClientError::Mechanism(e.to_string()))?;
        let session = SASLClient::new(config)
            .start_suggested(&[mechanism.mechname()])
            .map_err(|e| ClientError::Mechanism(e.to_string()))?;
        let mut exchange = ClientExchange {
            mechanism,
            session,
            initial_response: None,
            stage: Stage::Failed,
        };
        match mechanism {
            Mechanism::Login => exchange.stage = Stage::LoginUsername,
            Mechanism::Plain | Mechanism::ScramSha256 | Mechanism::ScramSha1 => {
                let (state, out) = exchange.run(None)?;
                exchange.stage = match (mechanism, state) {
                    (Mechanism::Plain, State::Finished(_)) => Stage::PlainSent,
                    (_, State::Running) if mechanism != Mechanism::Plain => Stage::ScramFirstSent,
                    _ => return Err(ClientError::Mechanism("unexpected first step".into())),
                };
                exchange.initial_response = Some(out);
            }
        }
        Ok(exchange)
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// What to send inline with `AUTHENTICATE <mech>`: `Some` for PLAIN and SCRAM
    /// (client-first), `None` for LOGIN (server-first).
    pub fn initial_response(&self) -> Option<&[u8]> {
        self.initial_response.as_deref()
    }

    /// Answers a decoded server challenge. On error the caller should cancel (`*`).
    pub fn step(&mut self, server_challenge: &[u8]) -> Result<ClientStep, ClientError> {
        let stage = std::mem::replace(&mut self.stage, Stage::Failed);
        let (next, step) = match stage {
            // Cyrus's LOGIN client ignores the prompt text; so does this one.
            Stage::LoginUsername => (Stage::LoginPassword, self.respond(server_challenge)?),
            Stage::LoginPassword => (Stage::LoginSent, self.respond(server_challenge)?),
            Stage::ScramFirstSent => {
                let iterations = scram::check_server_first(server_challenge)
                    .map_err(|_| ClientError::MalformedChallenge)?;
                if iterations > MAX_ITERATIONS {
                    return Err(ClientError::TooManyIterations(iterations));
                }
                if iterations == 0 {
                    return Err(ClientError::MalformedChallenge);
                }
                (Stage::ScramFinalSent, self.respond(server_challenge)?)
            }
            Stage::ScramFinalSent => {
                match scram::check_server_final(server_challenge)
                    .map_err(|_| ClientError::MalformedChallenge)?
                {
                    ServerFinal::Error(e) => return Err(ClientError::ServerError(e)),
                    ServerFinal::Verifier => {}
                }
                match self.run(Some(server_challenge)) {
                    Ok((State::Finished(_), _)) => (Stage::ScramVerified, ClientStep::Done),
                    Ok((State::Running, _)) => {
                        return Err(ClientError::Mechanism("SCRAM did not finish".into()));
                    }
                    Err(e) => return Err(e),
                }
            }
            Stage::PlainSent | Stage::LoginSent | Stage::ScramVerified | Stage::Failed => {
                return Err(ClientError::UnexpectedChallenge);
            }
        };
        self.stage = next;
        Ok(step)
    }

    /// Call on the server's `OK`: succeeds only if the exchange is complete — for SCRAM,
    /// only after the server's final message proved it knows the password, so an `OK`
    /// without it is refused.
    pub fn finish(&mut self) -> Result<(), ClientError> {
        match self.stage {
            Stage::PlainSent | Stage::LoginSent | Stage::ScramVerified => Ok(()),
            _ => {
                self.stage = Stage::Failed;
                Err(ClientError::Incomplete)
            }
        }
    }

    fn respond(&mut self, input: &[u8]) -> Result<ClientStep, ClientError> {
        let (_, out) = self.run(Some(input))?;
        Ok(ClientStep::Response(out))
    }

    fn run(&mut self, input: Option<&[u8]>) -> Result<(State, Vec<u8>), ClientError> {
        let mut out = Vec::new();
        match self.session.step(input, &mut out) {
            Ok(state) => Ok((state, out)),
            Err(SessionError::MutualAuthenticationFailed) => {
                Err(ClientError::ServerNotAuthenticated)
            }
            Err(e) => Err(ClientError::Mechanism(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn pick(list: &[&str], tls: bool, plain_ok: bool) -> Result<Mechanism, ClientError> {
        ClientExchange::new(&offered(list), tls, plain_ok, "repl", "secret", None)
            .map(|e| e.mechanism())
    }

    #[test]
    fn selection_order() {
        let all = ["PLAIN", "LOGIN", "SCRAM-SHA-1", "SCRAM-SHA-256"];
        assert_eq!(pick(&all, false, false), Ok(Mechanism::ScramSha256));
        assert_eq!(
            pick(&["plain", "scram-sha-1"], false, false),
            Ok(Mechanism::ScramSha1)
        );
        assert_eq!(pick(&["LOGIN", "PLAIN"], true, false), Ok(Mechanism::Plain));
        assert_eq!(pick(&["LOGIN", "PLAIN"], false, true), Ok(Mechanism::Plain));
        assert_eq!(pick(&["LOGIN"], true, false), Ok(Mechanism::Login));
        assert_eq!(
            pick(&["PLAIN", "LOGIN"], false, false),
            Err(ClientError::NoMechanism {
                plaintext_withheld: true
            })
        );
        assert_eq!(
            pick(&["DIGEST-MD5", "SCRAM-SHA-256-PLUS"], true, true),
            Err(ClientError::NoMechanism {
                plaintext_withheld: false
            })
        );
        assert_eq!(
            pick(&[], true, true),
            Err(ClientError::NoMechanism {
                plaintext_withheld: false
            })
        );
        // LOGIN cannot carry a different authzid.
        assert!(matches!(
            ClientExchange::new(&offered(&["LOGIN"]), true, true, "a", "pw", Some("b")),
            Err(ClientError::NoMechanism { .. })
        ));
        assert_eq!(
            ClientExchange::new(&offered(&["LOGIN"]), true, true, "a", "pw", Some("a"))
                .map(|e| e.mechanism()),
            Ok(Mechanism::Login)
        );
    }

    #[test]
    fn credentials_checked() {
        let all = offered(&["PLAIN"]);
        for (c, p, z) in [
            ("", "pw", None),
            ("a", "", None),
            ("a\0", "pw", None),
            ("a", "p\0w", None),
            ("a", "pw", Some("z\0")),
        ] {
            assert!(matches!(
                ClientExchange::new(&all, true, true, c, p, z),
                Err(ClientError::InvalidCredentials(_))
            ));
        }
    }

    #[test]
    fn cyrus_plain_initial_response() {
        let ex = ClientExchange::new(
            &offered(&["PLAIN"]),
            false,
            true,
            "repluser",
            "secret",
            None,
        )
        .unwrap();
        assert_eq!(ex.initial_response(), Some(&b"\0repluser\0secret"[..]));
        let ex = ClientExchange::new(
            &offered(&["PLAIN"]),
            false,
            true,
            "repl",
            "secret",
            Some(""),
        )
        .unwrap();
        assert_eq!(ex.initial_response(), Some(&b"\0repl\0secret"[..]));
        let ex = ClientExchange::new(
            &offered(&["PLAIN"]),
            false,
            true,
            "admin",
            "pw",
            Some("alice"),
        )
        .unwrap();
        assert_eq!(ex.initial_response(), Some(&b"alice\0admin\0pw"[..]));
        assert!(!format!("{ex:?}").contains("pw"));
    }

    #[test]
    fn hostile_server_messages() {
        let scram = |c: &[u8]| {
            let mut ex =
                ClientExchange::new(&offered(&["SCRAM-SHA-256"]), false, false, "u", "p", None)
                    .unwrap();
            ex.step(c)
        };
        for bad in [
            &b""[..],
            b"r",
            b"r=",
            b"r=a,s",
            b"x=y,s=QQ==,i=1",
            b"r=a,s=QQ==,i=0",
        ] {
            assert_eq!(scram(bad), Err(ClientError::MalformedChallenge), "{bad:?}");
        }
        assert_eq!(
            scram(b"r=a,s=QQ==,i=100000"),
            Err(ClientError::TooManyIterations(100000))
        );
        // A nonce that does not extend ours is refused by rsasl.
        assert!(matches!(
            scram(b"r=someone-else,s=QQ==,i=4096"),
            Err(ClientError::Mechanism(_))
        ));
        let mut plain =
            ClientExchange::new(&offered(&["PLAIN"]), true, false, "u", "p", None).unwrap();
        assert_eq!(plain.step(b""), Err(ClientError::UnexpectedChallenge));
        let mut scram_ex =
            ClientExchange::new(&offered(&["SCRAM-SHA-1"]), false, false, "u", "p", None).unwrap();
        assert_eq!(scram_ex.finish(), Err(ClientError::Incomplete));
    }
}
